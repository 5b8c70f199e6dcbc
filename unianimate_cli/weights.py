"""Find, describe and safely load the weight files, official or of another model family.

**Official files** (the reference README's ``checkpoints/`` folder, all published together on
ModelScope as ``iic/unianimate``):

=========  ====================================  ==========================================
component  file                                  content
=========  ====================================  ==========================================
unet       unianimate_16f_32f_non_ema_223000.pth UniAnimate video UNet (plain or wrapped)
vae        v2-1_512-ema-pruned.ckpt              SD-2.1 checkpoint; VAE under first_stage_model.
clip       open_clip_pytorch_model.bin           OpenCLIP ViT-H-14 laion2b_s32b_b79k
detector   yolox_l.onnx                          DWPose person detector
pose       dw-ll_ucoco_384.onnx                  DWPose whole-body keypoints
=========  ====================================  ==========================================

**Search order** for a file: ``--weights-dir``, then the config value (``weights.dir``), then
``<data dir>/weights`` where the data dir is ``$UNIANIMATE_DATA_DIR`` or platformdirs'
user data dir for ``unianimate``.

**Safe loading.** ``.safetensors`` files are read with safetensors; anything else goes through
``torch.load(weights_only=True, mmap=True)``. The only extra type allowed is a do-nothing stub
standing in for PyTorch Lightning's ``ModelCheckpoint`` class, which the SD-2.1 ``.ckpt``
pickles among its callbacks; no code from a weight file is ever run.

**models.json** (schema 1). A weights folder holding ``models.json`` describes a model family
other than the official one (tiny random models in tests, a demo family). Every component is
optional; an omitted one, or an omitted ``file``/``config``, falls back to the official
value. Files are looked for in the folder holding ``models.json`` first, then in the usual
search dirs::

    {
      "schema": 1,
      "name": "tiny-random",
      "unet":     {"file": "unet.safetensors", "config": {<UNetConfig fields>}},
      "vae":      {"file": "vae.safetensors",  "config": {<VAEConfig fields>}, "key_prefix": ""},
      "clip":     {"file": "clip.safetensors", "config": {"embed_dim": 32, "vision_cfg": {...},
                                                          "text_cfg": {...}, "quick_gelu": false}},
      "detector": {"file": "detector.onnx"},
      "pose":     {"file": "pose.onnx"}
    }

``unet.config`` takes the field names of ``unianimate_cli.models.unet.UNetConfig`` (lists
become tuples), ``vae.config`` those of ``VAEConfig``, ``clip.config`` the keyword arguments of
``open_clip.model.CLIP``. ``key_prefix`` selects and strips a prefix from the file's keys (the
official VAE uses ``first_stage_model.``; the default for a models.json VAE is none).
``write_tiny_family(dest)`` writes such a folder with random tiny models whose parts fit
together (UNet context = CLIP width, VAE factor 8), for tests and demos.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unianimate_cli.errors import WeightsError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from unianimate_cli.models.clip import ClipImageEncoder
    from unianimate_cli.models.vae import AutoencoderKL, VAEConfig

log = logging.getLogger(__name__)

MODELS_JSON = "models.json"
MODELS_JSON_SCHEMA = 1
COMPONENTS = ("unet", "vae", "clip", "detector", "pose")

UNET_FILE = "unianimate_16f_32f_non_ema_223000.pth"
SD_CKPT_FILE = "v2-1_512-ema-pruned.ckpt"
CLIP_FILE = "open_clip_pytorch_model.bin"
DETECTOR_FILE = "yolox_l.onnx"
POSE_FILE = "dw-ll_ucoco_384.onnx"

# Where the reference README says to get all five: ``snapshot_download('iic/unianimate')``.
MODELSCOPE_REPO = "iic/unianimate"
MODELSCOPE_URL = "https://modelscope.cn/models/iic/unianimate"

# Prefix of the VAE inside the SD-2.1 checkpoint (reference ``AutoencoderKL.init_from_ckpt``).
SD_VAE_PREFIX = "first_stage_model."


@dataclass(frozen=True)
class WeightSpec:
    """One official weight file: its name, what it holds and where it is published.

    ``hf_repo`` is the upstream Hugging Face repository of a third-party file (not named by the
    reference README, which only gives ModelScope); None where there is none.
    """

    component: str
    filename: str
    what: str
    hf_repo: str | None = None

    def how_to_get(self) -> str:
        """One-line instructions for the hint of a missing-file error."""
        where = f"ModelScope {MODELSCOPE_REPO} ({MODELSCOPE_URL})"
        if self.hf_repo:
            where += f" or Hugging Face {self.hf_repo}"
        return f"run `unianimate weights fetch`, or download {self.filename} from {where}"


OFFICIAL_WEIGHTS: dict[str, WeightSpec] = {
    "unet": WeightSpec("unet", UNET_FILE, "UniAnimate video UNet"),
    "vae": WeightSpec("vae", SD_CKPT_FILE, "Stable Diffusion 2.1 base (its VAE)", "stabilityai/stable-diffusion-2-1-base"),
    "clip": WeightSpec("clip", CLIP_FILE, "OpenCLIP ViT-H-14 laion2b_s32b_b79k", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"),
    "detector": WeightSpec("detector", DETECTOR_FILE, "DWPose person detector (YOLOX-L)", "yzd-v/DWPose"),
    "pose": WeightSpec("pose", POSE_FILE, "DWPose whole-body pose model", "yzd-v/DWPose"),
}
OFFICIAL_FILES: tuple[str, ...] = tuple(spec.filename for spec in OFFICIAL_WEIGHTS.values())


# --------------------------------------------------------------------------- where to look


def default_data_dir() -> Path:
    """``$UNIANIMATE_DATA_DIR`` or platformdirs' user data dir for ``unianimate``."""
    configured = os.environ.get("UNIANIMATE_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("unianimate", appauthor=False))


def default_weights_dir() -> Path:
    """``<data dir>/weights``: where ``unianimate weights fetch`` puts files by default."""
    return default_data_dir() / "weights"


def search_dirs(weights_dir: Path | str | None = None, config_dir: Path | str | None = None) -> list[Path]:
    """Folders to look in, in order: ``--weights-dir``, the config value, the data dir (deduplicated)."""
    candidates = [weights_dir, config_dir, default_weights_dir()]
    out: list[Path] = []
    for candidate in candidates:
        if candidate is None or str(candidate) == "":
            continue
        path = Path(candidate).expanduser()
        if path not in out:
            out.append(path)
    return out


def _spec_for(name: str) -> WeightSpec | None:
    for spec in OFFICIAL_WEIGHTS.values():
        if spec.filename == name:
            return spec
    return None


def find_weight(name: str, dirs: Sequence[Path], hint: str | None = None) -> Path:
    """Path of the file ``name`` in the first of ``dirs`` that has it.

    Raises ``WeightsError`` saying which file, every folder looked in and how to get it.
    """
    for folder in dirs:
        candidate = Path(folder) / name
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(d) for d in dirs) or "no folders"
    if hint is None:
        spec = _spec_for(name)
        hint = (
            spec.how_to_get() + ", into one of those folders (or pass --weights-dir)"
            if spec
            else f"put {name} into one of those folders or pass --weights-dir"
        )
    raise WeightsError(f"weight file {name} not found (looked in: {looked})", hint)


# --------------------------------------------------------------------------- safe loading


class _LightningModelCheckpointStub:
    """Stands in for ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``.

    The SD-2.1 ``.ckpt`` pickles the training callbacks (the class, as a dict key, and its
    state). With ``weights_only`` the unpickler may only create allowlisted types; this stub
    is one, has no methods, and just receives the state dict as plain attributes.
    """


# Everything the official files need beyond torch's own weights_only allowlist.
_ALLOWED_GLOBALS: list[Any] = [
    (_LightningModelCheckpointStub, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
]

_WRAPPER_KEYS = ("state_dict", "model", "module")


def load_state_dict(
    path: Path | str,
    select_prefix: str | None = None,
    dtype: torch.dtype | str | None = None,
    what: str | None = None,
) -> dict[str, torch.Tensor]:
    """Read a weight file into ``{key: tensor}`` without running any code from it.

    * ``.safetensors``: safetensors. Anything else: ``torch.load(weights_only=True)``,
      memory-mapped when the file is a zip archive, with the Lightning stub allowlisted.
    * A wrapped checkpoint (``{"state_dict": {...}, ...}``) is unwrapped; non-tensor entries
      are dropped; a ``module.`` prefix present on every key (DataParallel) is stripped.
    * ``select_prefix`` keeps only keys containing it and cuts everything up to its end, as
      the reference does for ``first_stage_model.``.
    * ``dtype`` (``torch.float16``, ``"bf16"``, ...) casts floating tensors.

    Raises ``WeightsError`` naming the file when it is missing, truncated, corrupt, holds
    disallowed objects or holds no tensors.
    """
    import torch

    path = Path(path)
    label = f"{what} weights {path}" if what else str(path)
    if not path.is_file():
        raise WeightsError(f"{label} does not exist", "check the path or run `unianimate weights`")
    if path.stat().st_size == 0:
        raise WeightsError(f"{label} is empty", "download the file again")
    if path.suffix == ".safetensors":
        # Read only the selected tensors: the file is memory-mapped and the rest never touched.
        raw: Any = _load_safetensors(path, label, select_prefix)
    else:
        raw = _torch_load(path, label)
    state = _unwrap(raw, label)
    state = _strip_module_prefix(state)
    if select_prefix:
        selected = {k.split(select_prefix)[-1]: v for k, v in state.items() if select_prefix in k}
        if not selected:
            sample = ", ".join(list(state)[:3])
            raise WeightsError(
                f"{label} has no keys with prefix {select_prefix!r} (keys look like: {sample})",
                "is this the right file for this component?",
            )
        state = selected
    if dtype is not None:
        target = parse_dtype(dtype)
        state = {k: (v.to(target) if v.is_floating_point() else v) for k, v in state.items()}
    return state


def parse_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``"fp16"``/``"float16"``/``"half"``, ``"bf16"``/``"bfloat16"``, ``"fp32"``/``"float32"`` or a dtype."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "fp16": torch.float16,
        "float16": torch.float16,
        "half": torch.float16,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp32": torch.float32,
        "float32": torch.float32,
        "float": torch.float32,
    }
    try:
        return names[str(dtype).lower()]
    except KeyError:
        raise WeightsError(f"unknown dtype {dtype!r}", "use fp32, fp16 or bf16") from None


def _load_safetensors(path: Path, label: str, select_prefix: str | None = None) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt", device="cpu") as f:
            names = list(f.keys())
            keys = [k for k in names if not select_prefix or select_prefix in k]
            if select_prefix and not keys:
                raise WeightsError(
                    f"{label} has no keys with prefix {select_prefix!r} (keys look like: {', '.join(names[:3])})",
                    "is this the right file for this component?",
                )
            return {k: f.get_tensor(k) for k in keys}
    except WeightsError:
        raise
    except Exception as exc:  # safetensors raises its own SafetensorError and OSError kinds
        raise WeightsError(
            f"{label} is not a readable safetensors file ({_short(exc)})",
            "the file is probably truncated or corrupt; download it again",
        ) from exc


def _torch_load(path: Path, label: str) -> Any:
    import torch

    is_zip = zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(_ALLOWED_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"unrecognized function ([^\s]+)", text)
        if found:
            raise WeightsError(
                f"{label} holds objects that are not allowed in a weight file ({found.group(1)}); refusing to load it",
                "use the official file, or convert it to safetensors with a tool you trust",
            ) from exc
        detail = re.search(r"WeightsUnpickler error: (.*?)(?:\n\n|$)", text, re.S)
        raise WeightsError(
            f"{label} is not a readable checkpoint ({_short(detail.group(1) if detail else exc)})",
            "the file is probably truncated or corrupt; download it again",
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, IndexError) as exc:
        raise WeightsError(
            f"{label} is truncated or corrupt ({_short(exc)})",
            "download the file again",
        ) from exc


def _short(exc: object) -> str:
    text = " ".join(str(exc).split())
    return text[:160] + ("..." if len(text) > 160 else "")


def _unwrap(raw: Any, label: str) -> dict[str, torch.Tensor]:
    import torch

    obj = raw
    for _ in range(3):  # {'state_dict': {...}} or {'model': {'state_dict': ...}} at most
        if not isinstance(obj, Mapping):
            break
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{label} holds a {type(obj).__name__}, not a state dict", "is this a weight file?")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    dropped = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if dropped:
        log.debug("%s: ignored %d non-tensor entries (%s)", label, len(dropped), ", ".join(dropped[:5]))
    if not tensors:
        raise WeightsError(f"{label} holds no tensors", "is this a weight file?")
    return tensors


def _strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prefix = "module."
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _preview(keys: Iterable[str], limit: int = 5) -> str:
    items = list(keys)
    shown = ", ".join(items[:limit])
    return f"{len(items)} ({shown}{', ...' if len(items) > limit else ''})"


def load_into(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    what: str,
    assign: bool = False,
) -> None:
    """Strictly load ``state_dict`` into ``module``; any mismatch raises a one-line ``WeightsError``.

    The message counts and names (first few) the missing keys, the unexpected keys and the
    keys whose shapes differ. ``assign=True`` is for a module built on the meta device: the
    loaded tensors become the parameters (no copy, no random init).
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected {_preview(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch {_preview(mismatched, 3)}")
    if problems:
        raise WeightsError(
            f"{what} weights do not fit the model: " + "; ".join(problems),
            "the file belongs to another model or configuration; check the file and models.json",
        )
    try:
        module.load_state_dict(dict(state_dict), strict=True, assign=assign)
    except RuntimeError as exc:  # e.g. a dtype torch cannot copy; keys were checked above
        raise WeightsError(f"{what} weights could not be loaded ({_short(exc)})") from exc


def disallowed_globals(path: Path | str) -> list[str]:
    """Globals a torch zip checkpoint pickles that our loader would refuse (diagnostics; nothing runs).

    Empty for safetensors files and for checkpoints that load. Legacy (non-zip) files cannot be
    inspected this way and give ``["<not a zip checkpoint>"]``.
    """
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        return []
    if not zipfile.is_zipfile(path):
        return ["<not a zip checkpoint>"]
    allowed = {name for _, name in _ALLOWED_GLOBALS}
    return [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) if g not in allowed]


def meta_tensor_names(module: nn.Module) -> list[str]:
    """Parameters and buffers still on the meta device (non-persistent buffers after an assign load)."""
    names = [n for n, p in module.named_parameters() if p.is_meta]
    names += [n for n, b in module.named_buffers() if b.is_meta]
    return names


# --------------------------------------------------------------------------- model families


def _tuples(value: Any) -> Any:
    """JSON lists -> tuples (recursively), for frozen dataclass configs."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _dataclass_from_dict(cls: type, values: Mapping[str, Any], where: str) -> Any:
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        guesses = difflib.get_close_matches(unknown[0], names, n=1)
        hint = f"did you mean {guesses[0]!r}?" if guesses else f"known fields: {', '.join(names)}"
        raise WeightsError(f"{where}: unknown {cls.__name__} field {unknown[0]!r}", hint)
    try:
        return cls(**{k: _tuples(v) for k, v in values.items()})
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{where}: invalid {cls.__name__} ({_short(exc)})") from exc


@dataclass(frozen=True)
class ComponentEntry:
    """One component of a model family: its file name and (None = official) config dict."""

    file: str
    config: Mapping[str, Any] | None = None
    key_prefix: str | None = None


@dataclass(frozen=True)
class ModelSet:
    """The five files and the configs of one model family (official, or a ``models.json``)."""

    name: str
    components: Mapping[str, ComponentEntry]
    root: Path | None = None  # folder holding models.json; None for the official set
    search: tuple[Path, ...] = field(default=())

    @property
    def is_official(self) -> bool:
        return self.root is None

    def dirs(self) -> list[Path]:
        """Where this set's files are looked for: its own folder first, then the search dirs."""
        out = [self.root] if self.root is not None else []
        return out + [d for d in self.search if d != self.root]

    def filename(self, component: str) -> str:
        return self.components[component].file

    def path(self, component: str) -> Path:
        """Existing path of a component's file, or ``WeightsError`` (which file, where, how)."""
        entry = self.components[component]
        spec = OFFICIAL_WEIGHTS[component]
        hint = None
        if entry.file != spec.filename:
            hint = f"this model family comes from {self.root / MODELS_JSON if self.root else 'models.json'}; put {entry.file} next to it"
        return find_weight(entry.file, self.dirs(), hint)

    def vae_config(self) -> VAEConfig:
        from unianimate_cli.models.vae import VAEConfig

        config = self.components["vae"].config
        if config is None:
            return VAEConfig.official()
        return _dataclass_from_dict(VAEConfig, config, self._where("vae"))  # type: ignore[no-any-return]

    def unet_config(self) -> Any:
        """``UNetConfig`` of this family (imported lazily from ``models/unet.py``)."""
        from unianimate_cli.models.unet import UNetConfig

        config = self.components["unet"].config
        if config is None:
            return UNetConfig.official()
        return _dataclass_from_dict(UNetConfig, config, self._where("unet"))

    def clip_config(self) -> dict[str, Any] | None:
        """open_clip ``CLIP(**cfg)`` kwargs, or None for the official ViT-H-14."""
        config = self.components["clip"].config
        return None if config is None else dict(config)

    def vae_key_prefix(self) -> str | None:
        entry = self.components["vae"]
        if entry.key_prefix is not None:
            return entry.key_prefix or None
        return SD_VAE_PREFIX if self.is_official or entry.file == SD_CKPT_FILE else None

    def _where(self, component: str) -> str:
        return f"{self.root / MODELS_JSON}: {component}.config" if self.root else f"official {component} config"

    def load_vae(
        self, device: torch.device | str = "cpu", dtype: torch.dtype | str | None = None
    ) -> AutoencoderKL:
        """Build the VAE on meta and assign its weights from the file (eval mode)."""
        import torch

        from unianimate_cli.models.vae import AutoencoderKL

        path = self.path("vae")
        state = load_state_dict(path, select_prefix=self.vae_key_prefix(), dtype=dtype, what="VAE")
        with torch.device("meta"):
            vae = AutoencoderKL(self.vae_config())
        load_into(vae, state, f"VAE ({path.name})", assign=True)
        return vae.to(device).eval()

    def load_clip(
        self, device: torch.device | str = "cpu", dtype: torch.dtype | str | None = None
    ) -> ClipImageEncoder:
        """Build the CLIP model on meta, assign its weights, rebuild its buffers (eval mode)."""
        from unianimate_cli.models.clip import load_clip_encoder

        return load_clip_encoder(self.path("clip"), config=self.clip_config(), device=device, dtype=dtype)

    def load_unet(self, device: torch.device | str = "cpu", dtype: torch.dtype | str | None = None) -> nn.Module:
        """Build the UNet on meta and assign its weights from the file (eval mode)."""
        import torch

        from unianimate_cli.models.unet import UniAnimateUNet

        path = self.path("unet")
        state = load_state_dict(path, dtype=dtype, what="UNet")
        with torch.device("meta"):
            unet = UniAnimateUNet(self.unet_config())
        load_into(unet, state, f"UNet ({path.name})", assign=True)
        leftover = meta_tensor_names(unet)
        if leftover:
            raise WeightsError(f"UNet ({path.name}) left tensors unset: {_preview(leftover)}")
        return unet.to(device).eval()


@dataclass(frozen=True)
class WeightStatus:
    """Where one component's file was found (``path`` None when missing)."""

    component: str
    filename: str
    path: Path | None


def model_set_status(model_set: ModelSet) -> list[WeightStatus]:
    """For ``unianimate weights``: each component's file and where it is, without loading anything."""
    out = []
    for component in COMPONENTS:
        try:
            path: Path | None = model_set.path(component)
        except WeightsError:
            path = None
        out.append(WeightStatus(component, model_set.filename(component), path))
    return out


def check_component(model_set: ModelSet, component: str) -> Path:
    """Cheaply prove that a component's file loads into its model; returns the file's path.

    Networks are built on the meta device and the (memory-mapped) file is matched key by key
    and shape by shape, so even the 5 GB SD checkpoint is checked in seconds without reading
    its tensors. ONNX files are only checked to exist and be non-empty. Raises ``WeightsError``.
    """
    import torch

    path = model_set.path(component)
    if component in ("detector", "pose"):
        if path.stat().st_size == 0:
            raise WeightsError(f"{component} model {path} is empty", "download the file again")
        return path
    module: nn.Module
    if component == "vae":
        from unianimate_cli.models.vae import AutoencoderKL

        state = load_state_dict(path, select_prefix=model_set.vae_key_prefix(), what="VAE")
        with torch.device("meta"):
            module = AutoencoderKL(model_set.vae_config())
    elif component == "clip":
        from unianimate_cli.models.clip import build_clip

        state = load_state_dict(path, what="CLIP")
        state.pop("attn_mask", None)
        module = build_clip(model_set.clip_config(), "meta")
    elif component == "unet":
        from unianimate_cli.models.unet import UniAnimateUNet

        state = load_state_dict(path, what="UNet")
        with torch.device("meta"):
            module = UniAnimateUNet(model_set.unet_config())
    else:
        raise WeightsError(f"unknown component {component!r}", f"known: {', '.join(COMPONENTS)}")
    load_into(module, state, f"{component} ({path.name})", assign=True)
    return path


def official_model_set(dirs: Sequence[Path] = ()) -> ModelSet:
    """The reference release: official file names, official configs."""
    comps = {name: ComponentEntry(spec.filename) for name, spec in OFFICIAL_WEIGHTS.items()}
    return ModelSet("official", comps, None, tuple(dirs))


def read_models_json(path: Path, dirs: Sequence[Path] = ()) -> ModelSet:
    """Parse a ``models.json`` (schema in the module docstring); errors name the file and key."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path} is not valid JSON ({_short(exc)})", "fix or remove the file") from exc
    if not isinstance(data, dict):
        raise WeightsError(f"{path} must hold a JSON object")
    schema = data.get("schema", MODELS_JSON_SCHEMA)
    if schema != MODELS_JSON_SCHEMA:
        raise WeightsError(f"{path}: schema {schema!r} is not supported", f"this version reads schema {MODELS_JSON_SCHEMA}")
    allowed = {"schema", "name", "description", *COMPONENTS}
    for key in data:
        if key not in allowed:
            guesses = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"did you mean {guesses[0]!r}?" if guesses else f"known keys: {', '.join(sorted(allowed))}"
            raise WeightsError(f"{path}: unknown key {key!r}", hint)
    comps: dict[str, ComponentEntry] = {}
    for name, spec in OFFICIAL_WEIGHTS.items():
        entry = data.get(name)
        if entry is None:
            comps[name] = ComponentEntry(spec.filename)
            continue
        if not isinstance(entry, dict):
            raise WeightsError(f"{path}: {name} must be an object like {{\"file\": ..., \"config\": {{...}}}}")
        extra = set(entry) - {"file", "config", "key_prefix"}
        if extra:
            raise WeightsError(f"{path}: {name} has unknown key {sorted(extra)[0]!r}", "known: file, config, key_prefix")
        file = entry.get("file", spec.filename)
        if not isinstance(file, str) or not file or Path(file).name != file:
            raise WeightsError(f"{path}: {name}.file must be a plain file name, got {file!r}")
        config = entry.get("config")
        if config is not None and not isinstance(config, dict):
            raise WeightsError(f"{path}: {name}.config must be an object")
        if config is not None and name in ("detector", "pose"):
            raise WeightsError(f"{path}: {name} takes no config (ONNX files carry their own)")
        prefix = entry.get("key_prefix")
        if prefix is not None and not isinstance(prefix, str):
            raise WeightsError(f"{path}: {name}.key_prefix must be a string")
        comps[name] = ComponentEntry(file, config, prefix)
    model_set = ModelSet(str(data.get("name", path.parent.name)), comps, path.parent, tuple(dirs))
    model_set.vae_config()  # validate early: a bad field fails here, not after other models load
    return model_set


def resolve_model_set(dirs: Sequence[Path]) -> ModelSet:
    """The first folder of ``dirs`` with a ``models.json`` defines the family; else the official one."""
    for folder in dirs:
        candidate = Path(folder) / MODELS_JSON
        if candidate.is_file():
            log.info("using model family from %s", candidate)
            return read_models_json(candidate, dirs)
    return official_model_set(dirs)


#: ``--model`` / ``general.model`` value naming the family shipped inside the package.
DEMO_MODEL = "demo"
#: Settings a family is made for (resolution, steps), beside its models.json; see config.py.
FAMILY_DEFAULTS = "defaults.toml"


def demo_family_dir() -> Path:
    """The demo family shipped as package data: tiny models trained on synthetic figures."""
    return Path(__file__).resolve().parent / "demo" / "family"


def model_family_dir(model: str) -> Path | None:
    """The folder of the family that ``--model`` names, or None to search the weights folders.

    ``""`` (or ``"official"``) is None; ``"demo"`` is :func:`demo_family_dir`; anything else is a
    folder holding a ``models.json`` (WeightsError naming the value when it does not).
    """
    value = str(model).strip()
    if value in ("", "official"):
        return None
    if value == DEMO_MODEL:
        return demo_family_dir()
    folder = Path(value).expanduser()
    if not (folder / MODELS_JSON).is_file():
        raise WeightsError(
            f"model {value!r} is neither 'demo' nor a folder holding {MODELS_JSON}",
            "use --model demo, or the path of a model family folder (see `unianimate weights`)",
        )
    return folder


# --------------------------------------------------------------------------- fetching


def fetch_weights(
    dest: Path,
    names: Sequence[str] | None = None,
    progress_cb: Callable[[str, int, int], None] | None = None,
) -> list[Path]:
    """Download official files into ``dest``; returns their paths.

    Uses ``modelscope`` (the reference's source, ``iic/unianimate``) when it is installed,
    else ``huggingface_hub`` for the files that have an upstream Hugging Face repository.
    ``progress_cb(filename, index, total)`` is called before each file. Files already present
    are kept. Offline, or with neither library, raises ``WeightsError``.
    """
    wanted = list(names) if names is not None else list(OFFICIAL_FILES)
    for name in wanted:
        if _spec_for(name) is None:
            raise WeightsError(f"{name} is not an official weight file", f"known: {', '.join(OFFICIAL_FILES)}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    downloader = _pick_downloader()
    out: list[Path] = []
    for index, name in enumerate(wanted):
        if progress_cb is not None:
            progress_cb(name, index, len(wanted))
        target = dest / name
        if target.is_file() and target.stat().st_size > 0:
            out.append(target)
            continue
        out.append(downloader(name, dest))
    return out


def _pick_downloader() -> Callable[[str, Path], Path]:
    try:
        import modelscope  # noqa: F401
    except ImportError:
        pass
    else:
        return _download_modelscope
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise WeightsError(
            "cannot download weights: neither modelscope nor huggingface_hub is installed",
            f"pip install 'unianimate[hub]' (or modelscope), or download the files from {MODELSCOPE_URL}",
        ) from None
    return _download_hf


def _download_modelscope(name: str, dest: Path) -> Path:
    from modelscope.hub.file_download import model_file_download

    try:
        got = Path(model_file_download(model_id=MODELSCOPE_REPO, file_path=name, local_dir=str(dest)))
    except Exception as exc:  # network and hub errors come in many types; all mean "not fetched"
        raise WeightsError(
            f"could not download {name} from ModelScope {MODELSCOPE_REPO} ({_short(exc)})",
            f"check the network, or download it by hand from {MODELSCOPE_URL} into {dest}",
        ) from exc
    return _place(got, dest / name)


def _download_hf(name: str, dest: Path) -> Path:
    import huggingface_hub

    spec = _spec_for(name)
    if spec is None or spec.hf_repo is None:
        raise WeightsError(
            f"{name} is published only on ModelScope ({MODELSCOPE_REPO})",
            f"pip install modelscope and run `unianimate weights fetch` again, or download it from {MODELSCOPE_URL} into {dest}",
        )
    try:
        got = Path(huggingface_hub.hf_hub_download(repo_id=spec.hf_repo, filename=name, local_dir=str(dest)))
    except Exception as exc:  # offline mode, HTTP and repository errors: all mean "not fetched"
        raise WeightsError(
            f"could not download {name} from Hugging Face {spec.hf_repo} ({_short(exc)})",
            f"check the network (HF_HUB_OFFLINE must be unset), or download it from {MODELSCOPE_URL} into {dest}",
        ) from exc
    return _place(got, dest / name)


def _place(got: Path, target: Path) -> Path:
    if got.resolve() != target.resolve():
        os.replace(got, target)
    return target


# --------------------------------------------------------------------------- tiny families


def tiny_family_configs(context_dim: int = 32) -> dict[str, dict[str, Any]]:
    """Configs of a small but complete model family whose parts fit each other.

    The UNet's ``context_dim`` equals the CLIP text width and image-embedding size (zero_y is
    [1, 77, context_dim]); the VAE has four levels, so latents are pixels / 8 as the UNet's
    pixel-space condition encoders expect. About 4 M parameters in all.
    """
    from unianimate_cli.models.clip import tiny_clip_config

    clip = tiny_clip_config()
    clip["embed_dim"] = context_dim
    clip["text_cfg"] = {**clip["text_cfg"], "width": context_dim}
    vae = {"ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1}
    unet = {
        "dim": 32,
        "dim_mult": [1, 2],
        "num_heads": 2,
        "head_dim": 16,
        "num_res_blocks": 1,
        "attn_scales": [1.0],
        "context_dim": context_dim,
        "y_dim": context_dim,
        "resolution": [64, 96],
    }
    return {"unet": unet, "vae": vae, "clip": clip}


def _randomise_(module: nn.Module, generator: torch.Generator) -> None:
    """Fixture-style weights (as the fixture READMEs describe): no zero-initialised layers.

    Norm weights 1 + 0.1 N(0,1), biases 0.02 N(0,1), others N(0,1)/sqrt(fan_in).
    """
    import torch

    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("bias"):
                param.copy_(0.02 * noise)
            elif param.ndim == 1:
                param.copy_(1 + 0.1 * noise)
            elif param.ndim > 1:
                param.copy_(noise / math.sqrt(param[0].numel()))


def write_tiny_family(
    dest: Path,
    seed: int = 0,
    detector_onnx: Path | None = None,
    pose_onnx: Path | None = None,
    name: str = "tiny-random",
) -> ModelSet:
    """Write a random tiny family (``models.json`` + safetensors) into ``dest``; returns its ModelSet.

    For tests and demos of the whole pipeline without the 7 GB of official weights. Given
    ONNX files are copied in as ``detector.onnx`` / ``pose.onnx``; without them those two
    components stay official.
    """
    import shutil

    import torch
    from safetensors.torch import save_file

    from unianimate_cli.models.clip import build_clip
    from unianimate_cli.models.unet import UNetConfig, UniAnimateUNet
    from unianimate_cli.models.vae import AutoencoderKL, VAEConfig

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    configs = tiny_family_configs()
    generator = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)  # open_clip initialises from the global generator
        clip = build_clip(configs["clip"])
    finally:
        torch.random.set_rng_state(torch_state)
    unet = UniAnimateUNet(_dataclass_from_dict(UNetConfig, configs["unet"], "tiny family unet"))
    vae = AutoencoderKL(VAEConfig.from_dict(configs["vae"]))
    _randomise_(unet, generator)
    _randomise_(vae, generator)
    entries: dict[str, Any] = {"schema": MODELS_JSON_SCHEMA, "name": name}
    for component, module in (("unet", unet), ("vae", vae), ("clip", clip)):
        filename = f"{component}.safetensors"
        state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
        save_file(state, str(dest / filename))
        entries[component] = {"file": filename, "config": configs[component]}
    for component, source in (("detector", detector_onnx), ("pose", pose_onnx)):
        if source is not None:
            shutil.copyfile(source, dest / f"{component}.onnx")
            entries[component] = {"file": f"{component}.onnx"}
    (dest / MODELS_JSON).write_text(json.dumps(entries, indent=2) + "\n")
    return read_models_json(dest / MODELS_JSON)
