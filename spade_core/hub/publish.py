"""Uploading a pipeline folder to the Hugging Face Hub (create_repo + upload_folder), with a dry run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import constants

from .names import MODEL_INDEX

_SKIPPED_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl")

__all__ = ["PushPlan", "hub_offline", "network_errors", "push_folder", "upload_plan"]


@dataclass
class PushPlan:
    """What an upload sends (relative path, bytes) and, after a real upload, where it went."""

    repo_id: str
    folder: Path
    files: list[tuple[str, int]] = field(default_factory=list)
    private: bool = False
    dry_run: bool = True
    url: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


def hub_offline() -> bool:
    """True when offline mode is on (spade_core.devices.offline), or huggingface_hub was imported in offline mode."""
    from ..devices import offline  # imported here: this module stays free of torch

    return offline() or bool(constants.HF_HUB_OFFLINE)


def network_errors() -> tuple[type[BaseException], ...]:
    """Exception classes that mean "the network or the Hub could not be reached" (of the HTTP stacks loaded)."""
    import sys

    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    requests = sys.modules.get("requests")
    if requests is not None:
        found += [requests.exceptions.ConnectionError, requests.exceptions.Timeout]
    for name in ("httpx", "httpx2"):  # huggingface_hub's HTTP client, by version
        httpx = sys.modules.get(name)
        if httpx is not None and hasattr(httpx, "TransportError"):
            found.append(httpx.TransportError)
    urllib3 = sys.modules.get("urllib3")
    if urllib3 is not None:
        found += [urllib3.exceptions.NewConnectionError, urllib3.exceptions.MaxRetryError]
    return tuple(found)


def _check_repo_id(repo_id: str) -> str:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    parts = str(repo_id).split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"repo id {repo_id!r} is not OWNER/NAME: pass e.g. --repo-id your-name/spade-coco")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"repo id {repo_id!r} is not valid ({str(err).splitlines()[0]}): use letters, digits, '-', '_', '.'") from None
    return repo_id


def upload_plan(folder: str | Path, repo_id: str, private: bool = False) -> PushPlan:
    """The files of ``folder`` an upload would send: safetensors, JSON, the card; no pickles, no dotfiles."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"pipeline folder {folder} not found: pass the folder written by save_pretrained or spade convert-nvlabs")
    if not (folder / MODEL_INDEX).is_file():
        raise ValueError(f"{folder} has no {MODEL_INDEX}, so it is not a pipeline folder: pass the folder written by save_pretrained")
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts) or path.suffix in _SKIPPED_SUFFIXES:
            continue
        files.append((rel.as_posix(), path.stat().st_size))
    return PushPlan(repo_id=_check_repo_id(repo_id), folder=folder, files=files, private=private)


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    dry_run: bool = False,
    token: str | None = None,
    commit_message: str = "Upload SPADE pipeline",
) -> PushPlan:
    """Create ``repo_id`` if needed and upload ``folder``; with ``dry_run`` only report what would go."""
    plan = upload_plan(folder, repo_id, private)
    if dry_run:
        return plan
    if hub_offline():
        raise ValueError("cannot upload in offline mode (HF_HUB_OFFLINE is set): unset it, or pass dry_run=True to check the folder")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            folder_path=str(plan.folder),
            repo_id=repo_id,
            repo_type="model",
            commit_message=commit_message,
            allow_patterns=[name for name, _ in plan.files],
        )
    except LocalTokenNotFoundError:
        raise ValueError("not logged in to the Hugging Face Hub: run `hf auth login` or set HF_TOKEN") from None
    except network_errors() as err:
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise ValueError(
            f"could not reach the Hugging Face Hub to upload to {repo_id} ({reason}): check the network and retry, "
            "or pass dry_run=True to check the folder without uploading"
        ) from None
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        if status in (401, 403):
            raise ValueError(
                f"the Hub refused the upload to {repo_id} (HTTP {status}): log in with a write token (`hf auth login`) "
                "and check that you may write to that namespace"
            ) from None
        raise ValueError(f"upload to {repo_id} failed ({str(err).splitlines()[0]}): retry, or check the repo on the Hub") from None
    plan.dry_run = False
    plan.url = str(getattr(info, "commit_url", None) or f"{constants.ENDPOINT}/{repo_id}")
    return plan
