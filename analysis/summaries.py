"""What ran (per study: scale, data, hardware, dates, trial counts) and the reproducibility appendix
(per trial: signature, commit, data fingerprint, rerun command; package versions across runs).

Facts come from the run records as written; it never fills a gap with a guess (gaps read 'not recorded').
"""

from datetime import datetime, timezone

import pandas as pd

from analysis.results import Results, Study
from study.records import BOOKKEEPING_KEYS, STATUSES, flatten

NOT_RECORDED = "not recorded"


def timestamp(value) -> str:
    """A run record's time (seconds since the epoch) as 'YYYY-MM-DD HH:MM UTC'."""
    try:
        return datetime.fromtimestamp(float(value), tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return NOT_RECORDED


def device_text(device: dict) -> str:
    """'cuda: NVIDIA H100 80GB HBM3' or 'cpu (Linux-...)' from a run record's device entry."""
    if not device:
        return NOT_RECORDED
    kind = device.get("type", "?")
    detail = device.get("gpu") or device.get("platform") or ""
    return f"{kind}: {detail}" if detail else str(kind)


def _distinct(values) -> str:
    values = sorted({str(value) for value in values if value not in (None, "")})
    return ", ".join(values) if values else NOT_RECORDED


def seeds_text(seeds) -> str:
    """'1 seed: 0' or '3 seeds: 0, 1, 2' (a bare '0' reads as no seeds)."""
    values = sorted({int(seed) for seed in seeds})
    if not values:
        return NOT_RECORDED
    return f"{len(values)} seed{'s' if len(values) > 1 else ''}: {', '.join(str(value) for value in values)}"


def varied_text(study: Study, records: list[dict]) -> str:
    """What the study varies, from its run records' configs: 'model.n_layers (2, 8)'; else the results
    columns that vary; else 'seed only' (several seeds) or 'nothing (one trial)'."""
    flats = [flatten(record.get("config") or {}) for record in records if record.get("config")]
    keys = sorted({key for flat in flats for key in flat})
    varied = {key: {str(flat.get(key)) for flat in flats} for key in keys if not key.startswith(BOOKKEEPING_KEYS)}
    parts = [f"{key} ({', '.join(sorted(values, key=_natural))})" for key, values in varied.items() if len(values) > 1]
    if not parts:
        parts = [f"{key} ({_distinct(study.trials[key].dropna())})" for key in study.varied_keys]
    if parts:
        return "; ".join(parts)
    return "seed only" if study.trials["seed"].dropna().nunique() > 1 else "nothing (one trial)"


def _natural(text: str):
    """Numbers by value, then everything else as text: 2 < 8 < 10 < 'None'."""
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def study_overview(study: Study) -> dict:
    trials = study.trials
    records = [study.record(signature) for signature in trials["signature"]]
    counts = trials["status"].value_counts()
    stand_ins = {(record.get("data_config") or {}).get("stands_in_for") for record in records} - {None}
    started = [record["started"] for record in records if record.get("started") is not None]
    ended = [record["finished"] for record in records if record.get("finished") is not None]
    wall = pd.to_numeric(trials["wall_seconds"], errors="coerce").sum()
    return {
        "study": study.name,
        "experiments": _distinct(trials["experiment"]),
        "scale": _distinct(trials["scale"]),
        "data": _distinct(trials["data"]) + (f" (stand-in for {_distinct(stand_ins)})" if stand_ins else ""),
        "trials": ", ".join(f"{int(counts[status])} {status}" for status in STATUSES if status in counts),
        "seeds": seeds_text(trials["seed"].dropna()),
        "varied": varied_text(study, records),
        "parameters": _distinct(f"{int(value):,}" for value in pd.to_numeric(trials["parameters"], errors="coerce").dropna()),
        "hardware": _distinct(device_text(record.get("device") or {}) for record in records if record),
        "started": timestamp(min(started)) if started else NOT_RECORDED,
        "finished": timestamp(max(ended)) if ended else NOT_RECORDED,
        "compute hours": round(float(wall) / 3600, 2),
        "source": study.source,
    }


def overview_table(results: Results) -> pd.DataFrame:
    """One row per loaded study: what ran, on what, when and how much of it finished."""
    return pd.DataFrame([study_overview(study) for study in results.studies]).set_index("study") \
        if results.studies else pd.DataFrame()


def reproducibility_table(results: Results) -> pd.DataFrame:
    """One row per trial: signature, seed, status, commit (+ dirty), data fingerprint, device, command."""
    rows = []
    for study in results.studies:
        for row in study.trials.itertuples(index=False):
            record = study.record(row.signature)
            git = record.get("git") or {}
            commit = git.get("commit")
            commit_text = NOT_RECORDED if not commit else commit[:12] + (" (dirty)" if git.get("dirty") else "")
            rows.append({"study": study.name, "trial": row.trial, "signature": row.signature,
                         "seed": row.seed, "status": row.status, "git commit": commit_text,
                         "data fingerprint": record.get("data_fingerprint") or NOT_RECORDED,
                         "device": device_text(record.get("device") or {}),
                         "command": record.get("command") or NOT_RECORDED})
    return pd.DataFrame(rows)


def package_table(results: Results) -> pd.DataFrame:
    """Package versions seen across runs: one row per package, all distinct versions, and run counts."""
    seen: dict[str, dict[str, int]] = {}
    for study in results.studies:
        for record in study.records.values():
            for package, version in (record.get("packages") or {}).items():
                versions = seen.setdefault(package, {})
                versions[str(version)] = versions.get(str(version), 0) + 1
    rows = [{"package": package,
             "versions": ", ".join(f"{version} ({count} runs)" for version, count in sorted(versions.items())),
             "consistent": "yes" if len(versions) == 1 else "NO: runs differ"}
            for package, versions in sorted(seen.items())]
    return pd.DataFrame(rows, columns=["package", "versions", "consistent"])
