"""Small helpers shared by every stage: safe checkpoint loading and atomic writes."""
