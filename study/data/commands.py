"""`study data prepare|info [overrides...]`: prepare a data config, or print the manifest of a prepared one.

User errors (DataError, ConfigError) propagate to the CLI, which prints them as one line; never a traceback.
"""

import json
import sys

from study.config import compose_config

USAGE = """usage: study data <prepare|info> [overrides...]
  study data prepare data=toy-piano                  prepare (or reuse) and print a summary
  study data prepare data=folder data.path=/music    your own audio files
  study data info data=youtubemix data.sample_rate=8000   print the manifest of a prepared cache"""


def summary(prepared) -> str:
    """A few lines: where the cache is, the knobs, and files / hours / windows per split."""
    manifest = prepared.manifest
    knobs = manifest["knobs"]
    window_seconds = knobs["sample_len"] / knobs["sample_rate"]
    lines = [
        f"{manifest['name']}: {'reused' if prepared.reused else 'prepared'} {prepared.path}",
        f"  source       {manifest['source_description']}",
        f"  fingerprint  {prepared.fingerprint}",
        f"  audio        {knobs['sample_rate']} Hz, {knobs['quantization']} {knobs['bits']} bits "
        f"({knobs.get('quantizer', 'torchaudio')} quantizer), "
        f"{knobs['normalization']} normalisation, windows of {knobs['sample_len']} samples ({window_seconds:.2f} s)",
        "",
        f"  {'split':<8}{'files':>7}{'hours':>9}{'windows':>10}",
    ]
    for name, split in [*manifest["splits"].items(), ("total", manifest["totals"])]:
        lines.append(f"  {name:<8}{split['files']:>7}{split['source_seconds'] / 3600:>9.3f}{split['windows']:>10}")
    skipped = manifest["skipped"]
    lines.append(f"\n  skipped {len(skipped)} file{'s' if len(skipped) != 1 else ''}")
    lines += [f"    {entry['path']}: {entry['reason']}" for entry in skipped[:20]]
    if len(skipped) > 20:
        lines.append(f"    ... {len(skipped) - 20} more in {prepared.path / 'manifest.json'}")
    lines += [f"  warning: {text}" for text in manifest["warnings"]]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, overrides = argv[0], argv[1:]
    if command not in ("prepare", "info"):
        print(f"study data: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    from study.data.prepare import find_prepared, prepare

    config = compose_config(overrides)
    if command == "prepare":
        prepared = prepare(config.data, config.paths, progress=True)
        print(summary(prepared))
    else:
        prepared = find_prepared(config.data, config.paths)
        print(json.dumps(prepared.manifest, indent=2))
    return 0
