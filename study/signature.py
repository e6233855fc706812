"""A run's signature, as in Dora: a hash of how its config differs from the schema's defaults, with the
keys that do not change results (records.SIGNATURE_EXCLUDED) left out.

Adding a key with a default therefore keeps every existing signature; changing a default does not
(say so when you do). Pure: reads no files.
"""

import hashlib
import json

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from study import validation
from study.config import StudyConfig, default_values
from study.records import SIGNATURE_EXCLUDED, flatten, listed

LENGTH = 12


def typed_values(config: DictConfig | dict) -> dict:
    """The config's values after merging onto the schema (so 60 and 60.0 hash alike), flattened.
    Accepts a composed config or the `config` of a run record."""
    try:
        typed = OmegaConf.merge(OmegaConf.structured(StudyConfig), config)
        return flatten(OmegaConf.to_container(typed, resolve=True))
    except OmegaConfBaseException as error:
        raise validation.omegaconf_error(error, "") from error


def config_delta(config: DictConfig | dict) -> dict:
    """The keys that change results and differ from their defaults: {'model.n_layers': 2, ...}."""
    defaults = default_values()
    return {key: value for key, value in sorted(typed_values(config).items())
            if not listed(key, SIGNATURE_EXCLUDED) and (key not in defaults or defaults[key] != value)}


def signature(config: DictConfig | dict, length: int = LENGTH) -> str:
    """First `length` hex digits of sha256 over the canonical JSON of `config_delta(config)`."""
    canonical = json.dumps(config_delta(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]
