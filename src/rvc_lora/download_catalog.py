"""What ``rvc-lora download`` fetches: RVC's public weight files, their sha256 and where they go.

Every file lives on the Hugging Face repo ``lj1995/VoiceConversionWebUI`` (RVC's own host) and
is stored under ``models/`` at the same relative path it has there, so a hand download from the
repo's file listing lands in the same place: ``models/hubert_base.pt``, ``models/rmvpe.pt``,
``models/pretrained_v2/f0G40k.pth`` (v1 bases under ``models/pretrained/``: same file names).
``configs/features/default.yaml`` reads ``${paths.models_dir}/hubert_base.pt`` and ``rmvpe.pt``.

Hash sources (facts only, no code taken):

- ``RVC``: RVC-Project/Retrieval-based-Voice-Conversion-WebUI, ``sha256.env`` as written by its
  "Calculate and Sync SHA256" workflow (commit a77615d1, 2024-04-21), which downloads every asset
  from lj1995/VoiceConversionWebUI and hashes it; the same values were in ``.env`` from commit
  4ed830f7 (the WebUI's start-up integrity check). hubert_base.pt also matches RVC_FACTS.md §6.1;
  rmvpe.pt and the v1/v2 f0 bases are pinned with the same values (and the sizes below) by
  independent public installers and Applio-based download manifests.
- ``installers``: the HF-format ContentVec folder ``hubert_base/`` (RVC ``main``'s layout, read
  by ``ContentEncoder.from_hf_dir``) has no hash in RVC's repo; these values are pinned by two
  unrelated public install scripts each (lj1995 revisions 1be9d36e and e6d0c1a1 carry the same
  ``pytorch_model.bin``).
- ``torchfcpe``: FCPE's official pitch weights ``fcpe_c_v001.pt`` (``f0_method=fcpe``; the configs
  read ``${paths.models_dir}/fcpe_c_v001.pt``) are published only inside the MIT-licensed
  ``torchfcpe`` wheel on PyPI. ``rvc-lora download fcpe`` has pip download that wheel and
  extracts the one file (:mod:`rvc_lora.download_wheel`); the package itself is never installed
  or imported (it pulls in torchaudio). Both hashes below were computed from
  ``torchfcpe-0.0.4-py3-none-any.whl`` as served by PyPI (40,222,012 bytes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_BASE_URL = "https://huggingface.co/lj1995/VoiceConversionWebUI/resolve/main"
BASE_URL_ENV = "RVC_LORA_DOWNLOAD_BASE_URL"
SAMPLE_RATES = ("32k", "40k", "48k")
VERSIONS = ("v1", "v2")
_PRESET = re.compile(r"^(v[12])_(32k|40k|48k)$")


@dataclass(frozen=True)
class WeightFile:
    """One downloadable file.

    Attributes:
        path: path under the base URL, and under ``--dest`` once downloaded.
        sha256: expected hex digest; ``None`` when no public source gives one (unverified).
        size: size in bytes where a source states it (display and resume only; the hash decides).
        source: where the hash comes from (see the module docstring).
        wheel: for a file shipped inside a pure-Python wheel instead of the base URL, the pip
            requirement that names the wheel (``"torchfcpe==0.0.4"``); ``None`` for HTTP files.
        wheel_sha256: hex digest of that wheel, checked before anything is extracted.
        member: the file's path inside the wheel.

    Raises:
        ValueError: a wheel entry without its wheel hash, member, sha256 or size (the size caps
            the extraction, the hashes are the only proof the file is the published one).
    """

    path: str
    sha256: str | None
    size: int | None = None
    source: str = "RVC"
    wheel: str | None = None
    wheel_sha256: str | None = None
    member: str | None = None

    def __post_init__(self) -> None:
        wheel_fields = (self.wheel, self.wheel_sha256, self.member)
        if any(f is not None for f in wheel_fields) and (
            None in wheel_fields or self.sha256 is None or self.size is None
        ):
            raise ValueError(
                f"catalog entry {self.path}: a wheel-sourced file needs wheel, wheel_sha256, "
                "member, sha256 and size"
            )


_FILES = [
    WeightFile("hubert_base.pt", "f54b40fd2802423a5643779c4861af1e9ee9c1564dc9d32f54f20b5ffba7db96", 189_507_909),
    WeightFile("rmvpe.pt", "6d62215f4306e3ca278246188607209f09af3dc77ed4232efdd069798c4ec193", 181_184_272),
    # v1 pretrained bases (RVC sha256.env keys sha256_v1_*).
    WeightFile("pretrained/f0G32k.pth", "285f524bf48bb692c76ad7bd0bc654c12bd9e5edeb784dddf7f61a789a608574", 72_795_627),
    WeightFile("pretrained/f0G40k.pth", "9115654aeef1995f7dd3c6fc4140bebbef0ca9760bed798105a2380a34299831", 72_909_665),
    WeightFile("pretrained/f0G48k.pth", "78bc9cab27e34bcfc194f93029374d871d8b3e663ddedea32a9709e894cc8fe8", 73_008_619),
    WeightFile("pretrained/f0D32k.pth", "294db3087236e2c75260d6179056791c9231245daf5d0485545d9e54c4057c77", 109_978_943),
    WeightFile("pretrained/f0D40k.pth", "7d4f5a441594b470d67579958b2fd4c6b992852ded28ff9e72eda67abcebe423", 109_978_943),
    WeightFile("pretrained/f0D48k.pth", "1b84c8bf347ad1e539c842e8f2a4c36ecd9e7fb23c16041189e4877e9b07925c", 109_978_943),
    WeightFile("pretrained/G32k.pth", "81817645cde7ed2e2d83f23ef883f33dda564924b497e84d792743912eca4c23"),
    WeightFile("pretrained/G40k.pth", "e428573bda1124b0ae0ae843fd8dcded6027d3993444790b3e9b0100938b2113"),
    WeightFile("pretrained/G48k.pth", "3862a67ea6313e8ffefc05cee6bee656ef3e089442e9ecf4a6618d60721f3e95"),
    WeightFile("pretrained/D32k.pth", "2ab20645829460fdad0d3c44254f1ab53c32cae50c22a66c926ae5aa30abda6f"),
    WeightFile("pretrained/D40k.pth", "547f66dbbcd9023b9051ed244d12ab043ba8a4e854b154cc28761ac7c002909b"),
    WeightFile("pretrained/D48k.pth", "8cc013fa60ed9c3f902f5bd99f48c7e3b9352d763d4d3cd6bc241c37b0bfd9ad"),
    # v2 pretrained bases (RVC sha256.env keys sha256_v2_*).
    WeightFile("pretrained_v2/f0G32k.pth", "2332611297b8d88c7436de8f17ef5f07a2119353e962cd93cda5806d59a1133d", 73_950_049),
    WeightFile("pretrained_v2/f0G40k.pth", "3b2c44035e782c4b14ddc0bede9e2f4a724d025cd073f736d4f43708453adfcb", 73_106_273),
    WeightFile("pretrained_v2/f0G48k.pth", "b5d51f589cc3632d4eae36a315b4179397695042edc01d15312e1bddc2b764a4", 75_465_569),
    WeightFile("pretrained_v2/f0D32k.pth", "bd7134e7793674c85474d5145d2d982e3c5d8124fc7bb6c20f710ed65808fa8a", 142_875_703),
    WeightFile("pretrained_v2/f0D40k.pth", "6b6ab091e70801b28e3f41f335f2fc5f3f35c75b39ae2628d419644ec2b0fa09", 142_875_703),
    WeightFile("pretrained_v2/f0D48k.pth", "2269b73c7a4cf34da09aea99274dabf99b2ddb8a42cbfb065fb3c0aa9a2fc748", 142_875_703),
    WeightFile("pretrained_v2/G32k.pth", "869b26a47f75168d6126f64ac39e6de5247017a8658cfd68aca600f7323efb9f"),
    WeightFile("pretrained_v2/G40k.pth", "a3843da7fde33db1dab176146c70d6c2df06eafe9457f4e3aa10024e9c6a4b69"),
    WeightFile("pretrained_v2/G48k.pth", "2e2b1581a436d07a76b10b9d38765f64aa02836dc65c7dee1ce4140c11ea158b"),
    WeightFile("pretrained_v2/D32k.pth", "d8043378cc6619083d385f5a045de09b83fb3bf8de45c433ca863b71723ac3ca"),
    WeightFile("pretrained_v2/D40k.pth", "471378e894e7191f89a94eda8288c5947b16bbe0b10c3f1f17efdb7a1d998242"),
    WeightFile("pretrained_v2/D48k.pth", "db01094a93c09868a278e03dafe8bb781bfcc1a5ba8df168c948bf9168c84d82"),
    # The same ContentVec as hubert_base.pt in HF format (``features.encoder_path=models/hubert_base``).
    WeightFile("hubert_base/config.json", "0346950779dfb7f9316fa74ed846e2b8a22a08eedfdc5387b73f327cb1a4a7cf", source="installers"),
    WeightFile("hubert_base/preprocessor_config.json", "7c1976a680fb7acc757cd36fb08eef878fa36c70b4c9d2d595df9c608bbbbf0e", source="installers"),
    WeightFile("hubert_base/pytorch_model.bin", "cc8c20f4b90a520757260197a3ff2505705a7adbd20ad9eeaa4e1a9b38442ef5", source="installers"),
    # FCPE pitch estimator (``f0_method=fcpe``), out of the torchfcpe wheel on PyPI.
    WeightFile(
        "fcpe_c_v001.pt", "b9aeaeb673436eeda50ceafd632aa681aa63417e52eae4207503d180c9b10015", 43_363_260,
        source="torchfcpe", wheel="torchfcpe==0.0.4",
        wheel_sha256="f042c463d850d76c6f4899a0b84f0b694bb560adf05f4de951097a756d17472d",
        member="torchfcpe/assets/fcpe_c_v001.pt",
    ),
]  # fmt: skip

CATALOG: dict[str, WeightFile] = {f.path: f for f in _FILES}

# Names that stand for several files.
GROUPS: dict[str, tuple[str, ...]] = {
    "contentvec": tuple(p for p in CATALOG if p.startswith("hubert_base/")),
    "fcpe": ("fcpe_c_v001.pt",),
}


def pretrained_pair(version: str, sr: str, f0: bool) -> tuple[str, str]:
    """Catalog paths of the RVC base generator and discriminator for one model preset."""
    folder = "pretrained" if version == "v1" else "pretrained_v2"
    prefix = "f0" if f0 else ""
    return f"{folder}/{prefix}G{sr}.pth", f"{folder}/{prefix}D{sr}.pth"


def default_selection(version: str = "v2", sr: str = "40k", f0: bool = True) -> list[str]:
    """What ``model=<version>_<sr>`` with ``features=default`` needs: encoder, RMVPE, G and D."""
    return ["hubert_base.pt", "rmvpe.pt", *pretrained_pair(version, sr, f0)]


def expand_name(name: str, catalog: dict[str, WeightFile], f0: bool = True) -> list[str] | None:
    """Catalog paths for a file path, a group (``contentvec``, ``fcpe``) or a preset (``v2_48k``).

    Returns ``None`` for a name that is none of these.
    """
    if name in catalog:
        return [name]
    if name in GROUPS:
        return list(GROUPS[name])
    m = _PRESET.match(name)
    if m:
        return default_selection(m.group(1), m.group(2), f0)
    return None
