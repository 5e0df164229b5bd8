"""The run: a typed recipe (`config`), atomic stages (`stage`), one function per stage
(`stages`), what differs between text and GUI agents (`agents`), and `execute()` (`loop`)."""

from trajkit.pipeline.config import RunConfig, config_to_yaml, demo_config, load_run_config
from trajkit.pipeline.loop import execute

__all__ = ["RunConfig", "config_to_yaml", "demo_config", "execute", "load_run_config"]
