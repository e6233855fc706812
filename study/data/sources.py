"""Where the audio files of a data config come from: a hub archive, a folder, or a generated toy set.

Every source ends as one natural-sorted list of files under a root folder. The only network access in
the project's data code is `download_archive`, and only when the archive is not already on disk.
"""

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
from huggingface_hub import errors as hub_errors
from natsort import natsorted, ns

from study.data import DataError
from study.data.audio_io import AUDIO_EXTENSIONS
from study.data.cache import build_once, file_hash
from study.data.settings import DataSettings
from study.data.toy import toy_folder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceFiles:
    """Candidate audio files (natural-sorted by path relative to root) and the files passed over."""

    root: Path
    files: list[Path]
    ignored: list[dict]  # {"path": relative path, "reason": why it is not a candidate}
    description: str

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def list_audio_files(root: Path) -> tuple[list[Path], list[dict]]:
    """Audio files under root (recursive, hidden entries and __MACOSX skipped), natural-sorted.

    Files with other extensions are returned as ignored with a reason; a `.wav` that is not audio
    is still a candidate and is rejected later, when decoding, with its own reason.
    """
    files, ignored = [], []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if any(part.startswith(".") or part == "__MACOSX" for part in relative.parts) or not path.is_file():
            continue
        if path.suffix.lower() in AUDIO_EXTENSIONS:
            files.append(path)
        else:
            ignored.append({"path": relative.as_posix(),
                            "reason": f"extension {path.suffix or '(none)'!r} is not one of {', '.join(AUDIO_EXTENSIONS)}"})
    files = natsorted(files, key=lambda p: p.relative_to(root).as_posix(), alg=ns.PATH)
    ignored = natsorted(ignored, key=lambda entry: entry["path"], alg=ns.PATH)
    return files, ignored


def archive_path(settings: DataSettings, downloads: Path) -> Path:
    """Where hf_hub_download(local_dir=<downloads>/<name>) puts the archive; present means downloaded."""
    return downloads / settings.name / settings.filename


def hub_access_error(settings: DataSettings, error: Exception) -> DataError:
    terms = f"https://huggingface.co/datasets/{settings.repo_id}"
    return DataError(
        f"cannot download {settings.filename} from the Hugging Face dataset {settings.repo_id} "
        f"({type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else 'no detail'}). "
        f"If the dataset is gated, accept its terms at {terms} and set HF_TOKEN to an access token; "
        "check the network connection; or train on local audio with data=folder data.path=/your/music "
        "(or the embedded data=toy-piano / data=toy-trio)."
    )


def download_archive(settings: DataSettings, downloads: Path) -> Path:
    """The archive on disk, downloaded with huggingface_hub only if it is not there yet."""
    target = archive_path(settings, downloads)
    if target.is_file():
        return target
    log.info("downloading %s from dataset %s into %s", settings.filename, settings.repo_id, target.parent)
    network_errors: tuple[type[BaseException], ...] = (hub_errors.HfHubHTTPError, hub_errors.LocalEntryNotFoundError,
                                                       hub_errors.OfflineModeIsEnabled, OSError)
    try:
        import httpx2
        network_errors += (httpx2.HTTPError,)
    except ImportError:  # older huggingface_hub releases use requests / httpx instead
        pass
    try:
        downloaded = huggingface_hub.hf_hub_download(
            repo_id=settings.repo_id, filename=settings.filename, repo_type="dataset", local_dir=target.parent,
        )
    except network_errors as error:
        raise hub_access_error(settings, error) from error
    return Path(downloaded)


def extract_archive(archive: Path) -> Path:
    """The archive unpacked (once, atomically) into <archive folder>/extracted-<sha256[:12]>/."""
    destination = archive.parent / f"extracted-{file_hash(archive)[:12]}"

    def unzip(temporary: Path) -> None:
        try:
            with zipfile.ZipFile(archive) as bundle:
                bundle.extractall(temporary)  # extractall drops absolute paths and '..' components
        except (zipfile.BadZipFile, EOFError) as error:
            raise DataError(
                f"{archive} is not a readable zip archive ({error}); delete it and run again to download it anew"
            ) from error

    build_once(destination, unzip)
    return destination


def resolve_source(settings: DataSettings, paths_config, download: bool = True) -> SourceFiles:
    """The candidate files of the configured source; may download (hub) or generate (toy) first."""
    downloads = Path(str(paths_config.downloads)).expanduser()
    cache_root = Path(str(paths_config.data_cache)).expanduser()
    if settings.source == "folder":
        root = Path(settings.path).expanduser().resolve()
        description = f"folder {root}"
    elif settings.is_toy:
        style = settings.source.removeprefix("toy-")
        root = toy_folder(cache_root, style, settings.toy_clips, settings.toy_clip_seconds, settings.seed)
        description = f"embedded {settings.source}: {settings.toy_clips} clips of {settings.toy_clip_seconds:g} s, seed {settings.seed}"
    else:
        archive = archive_path(settings, downloads)
        if not archive.is_file():
            if not download:
                raise DataError(
                    f"{settings.name} is not downloaded yet ({archive} is missing); "
                    f"run `study data prepare data={settings.name}` first"
                )
            archive = download_archive(settings, downloads)
        root = extract_archive(archive)
        description = f"hub dataset {settings.repo_id} file {settings.filename}"
    files, ignored = list_audio_files(root)
    if not files:
        fix = ("point data.path at a folder that holds audio files" if settings.source == "folder"
               else f"delete {root.parent} and run again to download and unpack it anew")
        raise DataError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found in {root} ({description}); {fix}")
    return SourceFiles(root=root, files=files, ignored=ignored, description=description)

