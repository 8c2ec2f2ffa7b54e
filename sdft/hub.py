"""Push sdft outputs to the Hugging Face Hub: a rewrite/replay output as a dataset, a trained model as a model.

Each push is one commit to a repo created private by default: the data file (or the model
folder), the manifest sdft wrote (secrets redacted) and a generated card as ``README.md``
(:mod:`sdft.card`). ``huggingface_hub`` is imported only when a push starts; nothing here talks
to the network at import time.

Errors: a bad repo id, a missing or unfinished output, no token or ``HF_HUB_OFFLINE`` set raise
:class:`InputError` (exit 2) before any request; what the Hub or the network answers becomes a
one-line :class:`SdftError` (exit 1) naming the cause.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdft.card import (
    clean,
    data_file_name,
    dataset_card,
    find_run,
    manifest_file_name,
    model_card_for,
    redact,
)
from sdft.errors import InputError, SdftError

# the Hub's rules: letters, digits, '-', '_', '.'; no '--' or '..'; no '-' or '.' at either end; 96 characters
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"{_PART}/{_PART}")
_RUN_FILE = "sdft_run.json"


def check_repo_id(repo_id: Any) -> str:
    """Return ``repo_id`` when it is a valid ``owner/name`` Hub repo id, else raise :class:`InputError`."""
    if not isinstance(repo_id, str) or not _REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id \
            or repo_id.endswith(".git"):
        shown = clean(repo_id, 120) if isinstance(repo_id, str) else type(repo_id).__name__
        raise InputError(f"--push-to-hub: '{shown}' is not a Hub repo id: expected OWNER/NAME (your user or an "
                         f"organisation, then the repo name; letters, digits, '-', '_', '.'; at most 96 each)")
    return repo_id


def _hub() -> Any:
    from sdft._deps import require

    return require("huggingface_hub", "pushing to the Hugging Face Hub")


def preflight(repo_id: str, *, token: str | None = None) -> str:
    """Check, without any request, that a push can start: repo id, package, online mode, a token.

    Call it before a long run so that ``--push-to-hub`` fails in a second, not after an hour.

    Returns:
        The token to use (``token``, else ``HF_TOKEN`` / the saved login).

    Raises:
        InputError: a bad repo id, ``HF_HUB_OFFLINE`` set, or no token.
        MissingDependency: ``huggingface_hub`` is not installed.
    """
    check_repo_id(repo_id)
    hub = _hub()
    from huggingface_hub import constants

    if getattr(constants, "HF_HUB_OFFLINE", False):
        raise InputError("--push-to-hub: HF_HUB_OFFLINE is set, so no request may reach the Hub: unset it "
                         "(and HF_HUB_OFFLINE=0 / TRANSFORMERS_OFFLINE) to push")
    if not token:
        try:  # HF_TOKEN, the saved login, or an OIDC exchange (which raises when it fails)
            token = hub.get_token()
        except Exception as e:
            raise SdftError(f"--push-to-hub: could not get a Hugging Face token: {type(e).__name__}: "
                            f"{clean(e, 200)}") from e
    if not token:
        raise InputError("--push-to-hub: no Hugging Face token: set HF_TOKEN to a token with write access "
                         "(https://huggingface.co/settings/tokens) or run `hf auth login`")
    return token


def push_dataset(output_path: str | Path, repo_id: str, *, private: bool = True, token: str | None = None,
                 endpoint: str | None = None, command_line: str | None = None, license: str | None = None,
                 notice: Callable[[str], None] | None = None) -> str:
    """Push a finished ``sdft rewrite`` / ``sdft replay`` output as a dataset repo, in one commit.

    The repo gets the data file (under its own name when that is a plain ``*.jsonl`` name, else
    ``data.jsonl``), ``NAME.manifest.json`` (secrets redacted) and ``README.md`` (the dataset card,
    whose ``configs`` point the Hub viewer at the data file).

    Args:
        output_path: the output JSONL (its manifest ``OUT.manifest.json`` must be beside it).
        repo_id: ``OWNER/NAME``.
        private: create the repo private (the default). An existing repo keeps its visibility;
            pushing to an existing *public* repo needs ``private=False``.
        token: a token with write access (default: ``HF_TOKEN`` or the saved login).
        endpoint: the Hub URL (default: ``HF_ENDPOINT`` or https://huggingface.co).
        command_line: the command that made the output, for the card.
        license: a Hub license id for the card.
        notice: one-line notices.

    Returns:
        The dataset repo's URL.
    """
    out = Path(output_path)
    manifest = _finished_manifest(out)
    token = preflight(repo_id, token=token)
    name = data_file_name(out)
    card = dataset_card(manifest, command_line=command_line, data_file=name, repo_id=repo_id, license=license)
    files: dict[str, Path | bytes] = {
        "README.md": card.encode("utf-8"),
        name: out,
        manifest_file_name(name): _json_bytes(redact(manifest)),
    }
    kind = "replay" if manifest.get("kind") == "sdft-replay" else "SDFT rewrite"
    return _push(files, repo_id, "dataset", private=private, token=token, endpoint=endpoint,
                 message=f"Upload {kind} data made with sdft", notice=notice)


def push_model(model_dir: str | Path, repo_id: str, *, run: dict[str, Any] | None = None, private: bool = True,
               token: str | None = None, endpoint: str | None = None, command_line: str | None = None,
               license: str | None = None, notice: Callable[[str], None] | None = None) -> str:
    """Push a model folder trained by ``sdft train`` (``merged/``, or ``final/`` = the LoRA adapter), one commit.

    The repo gets every regular file of the folder (hidden files, symlinks and a README.md
    are left out), ``README.md`` (the model card), and from around the folder, when present:
    ``loss_curve.png``, ``train_metrics.json`` and the run record as ``sdft_run.json`` (secrets
    redacted).

    Args:
        model_dir: the model folder (``config.json`` or ``adapter_config.json`` inside).
        repo_id: ``OWNER/NAME``.
        run: the run record; default: ``run.json`` two levels up (``OUT/model/merged`` -> ``OUT``).
        private, token, endpoint, command_line, license, notice: as in :func:`push_dataset`.

    Returns:
        The model repo's URL.
    """
    d = Path(model_dir)
    if not d.is_dir() or not ((d / "config.json").is_file() or (d / "adapter_config.json").is_file()):
        raise InputError(f"--push-to-hub: {d} is not a model folder (no config.json or adapter_config.json): "
                         f"push OUT/model/merged (a full model) or OUT/model/final (a LoRA adapter)")
    token = preflight(repo_id, token=token)
    run = run if isinstance(run, dict) else find_run(d)
    files: dict[str, Path | bytes] = {}
    for f in sorted(d.rglob("*")):
        rel = f.relative_to(d)
        if f.is_symlink():
            if notice:
                notice(f"not pushing {f}: a symbolic link")
            continue
        if f.is_file() and not any(part.startswith(".") for part in rel.parts) and rel.as_posix() != "README.md":
            files[rel.as_posix()] = f
    extras: dict[str, Path | bytes] = {}
    curve = d.parent / "loss_curve.png"
    if curve.is_file() and not curve.is_symlink():
        extras["loss_curve.png"] = curve
    metrics = d.parent / "train_metrics.json"
    if metrics.is_file() and not metrics.is_symlink():
        extras["train_metrics.json"] = _json_bytes(redact(_load_json(metrics)))
    if run:
        extras[_RUN_FILE] = _json_bytes(redact(run))
    for name, src in extras.items():
        files.setdefault(name, src)
    card = model_card_for(d, run, command_line=command_line, repo_id=repo_id, license=license,
                          loss_curve="loss_curve.png" if "loss_curve.png" in files else None)
    files["README.md"] = card.encode("utf-8")
    return _push(files, repo_id, "model", private=private, token=token, endpoint=endpoint,
                 message="Upload model trained with sdft", notice=notice)


def _finished_manifest(out: Path) -> dict[str, Any]:
    from sdft.store import manifest_path

    if not out.is_file():
        raise InputError(f"--push-to-hub: no output file at {out}: run the command that makes it first")
    mp = manifest_path(out)
    if not mp.is_file():
        raise InputError(f"--push-to-hub: {out} has no manifest beside it ({mp.name}): the run is not finished; "
                         f"rerun the same command to finish it, then push")
    manifest = _load_json(mp)
    if not isinstance(manifest, dict):
        raise InputError(f"--push-to-hub: {mp}: expected a JSON object (the manifest sdft writes)")
    return manifest


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise InputError(f"--push-to-hub: {path}: not readable JSON ({clean(e, 200)})") from None


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8")


def _push(files: dict[str, Path | bytes], repo_id: str, repo_type: str, *, private: bool, token: str,
          endpoint: str | None, message: str, notice: Callable[[str], None] | None) -> str:
    """Create the repo (or find it), then commit ``files`` (path in repo -> local file or bytes) at once."""
    hub = _hub()
    from huggingface_hub.errors import HfHubHTTPError

    api = hub.HfApi(endpoint=endpoint, token=token)
    prefix = "datasets/" if repo_type == "dataset" else ""
    url = f"{api.endpoint.rstrip('/')}/{prefix}{repo_id}"
    try:
        try:
            url = str(api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=False))
        except HfHubHTTPError as e:
            # 409: it exists. 401/402/403: a token may write to an existing repo yet not create one
            # (fine-grained tokens): look it up, and report the create error if it is not there.
            if _status(e) not in (401, 402, 403, 409):
                raise
            try:
                info = api.repo_info(repo_id, repo_type=repo_type)
            except HfHubHTTPError:
                raise e from None
            if private and getattr(info, "private", None) is False:
                raise InputError(f"--push-to-hub: {repo_id} exists and is public: pass --public to push to it "
                                 f"anyway, or choose another name") from None
            if notice:
                notice(f"{repo_id} exists: adding a commit (its visibility is unchanged)")
        ops = [hub.CommitOperationAdd(path_in_repo=name, path_or_fileobj=src if isinstance(src, bytes) else str(src))
               for name, src in files.items()]
        api.create_commit(repo_id, ops, commit_message=message, repo_type=repo_type)
    except SdftError:
        raise
    except Exception as e:  # the Hub client raises many types; each becomes one line naming the cause
        raise explain_error(e, repo_id, api.endpoint) from e
    return url


def _status(e: BaseException) -> int | None:
    status = getattr(getattr(e, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def explain_error(e: BaseException, repo_id: str, endpoint: str) -> SdftError:
    """One line naming why a push failed (auth, permissions, network, the Hub's own message)."""
    status = _status(e)
    server = clean(getattr(e, "server_message", None) or "", 300)
    detail = f": {server}" if server else ""
    if type(e).__name__ == "OfflineModeIsEnabled":
        return InputError("--push-to-hub: HF_HUB_OFFLINE is set: unset it to push")
    if status == 401:
        return SdftError(f"the Hub rejected the token (HTTP 401) pushing to {repo_id}: set HF_TOKEN to a valid "
                         f"token with write access{detail}")
    if status == 403:
        return SdftError(f"no write access to {repo_id} (HTTP 403): use a token allowed to write to that "
                         f"namespace{detail}")
    if status == 404:
        return SdftError(f"{repo_id} not found (HTTP 404): check the owner (your user or one of your "
                         f"organisations){detail}")
    if status is not None:
        return SdftError(f"the Hub answered HTTP {status} while pushing to {repo_id}{detail}")
    if isinstance(e, ValueError) and "metadata" in str(e).lower():
        return SdftError(f"the Hub rejected the card of {repo_id}: {clean(e, 300)}")
    if isinstance(e, OSError) or type(e).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore"):
        return SdftError(f"could not reach the Hub at {endpoint} ({type(e).__name__}: {clean(e, 200)}): check "
                         f"the network, a proxy or HF_ENDPOINT")
    return SdftError(f"pushing to {repo_id} failed: {type(e).__name__}: {clean(e, 300)}")
