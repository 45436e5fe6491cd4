"""Profiles and the run configuration schema."""

from .profiles import apply_overrides, bundled_profile_dir, find_profile, list_profiles, load_profile, validate_config
from .schema import RunConfig, resolve_step_size
from .yamlio import dump_yaml, parse_yaml, read_yaml

__all__ = [
    "RunConfig", "apply_overrides", "bundled_profile_dir", "dump_yaml", "find_profile", "list_profiles",
    "load_profile", "parse_yaml", "read_yaml", "resolve_step_size", "validate_config",
]
