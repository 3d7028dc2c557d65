"""The pipeline's own knobs (paths and thresholds) as a Dagster resource, built from `Settings`.

It does no I/O: it only carries settings to the assets, so tests can set them without env vars.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg

from tm2_pipeline.home import Tm2Home


class PipelineConfig(dg.ConfigurableResource):
    tm2_home: str
    landing_dir: str
    timezone: str = "Asia/Kolkata"
    day_first: bool = True
    reject_warn: float = 0.05
    reject_block: float = 0.5
    submission_warn: float = 0.2

    @property
    def home(self) -> Tm2Home:
        return Tm2Home(Path(self.tm2_home))

    def today(self) -> date:
        """Today where the clinics are: dates after this are in the future."""
        return datetime.now(ZoneInfo(self.timezone)).date()
