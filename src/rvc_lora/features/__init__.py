"""Analysis features that RVC is fed: content features, F0 tracks and coarse pitch."""
