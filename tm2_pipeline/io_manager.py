"""Tables pass between assets as Parquet under `$TM2_HOME/tables`, not as pickles in Dagster's storage.

Patient data therefore lives in exactly one place (`$TM2_HOME`), whatever storage the Dagster
instance uses. DataFrames are written as Parquet; small descriptors (dicts) as JSON; an
`AcceptedTable` its asset wrote chunk by chunk is moved into place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from tm2_pipeline.accepted_table import AcceptedTable
from tm2_pipeline.home import Tm2Home


class Tm2TableIOManager(dg.ConfigurableIOManager):
    tm2_home: str

    def _path(self, context: dg.OutputContext | dg.InputContext, suffix: str) -> Path:
        partition = context.asset_partition_key if context.has_asset_partitions else "all"
        return Tm2Home(Path(self.tm2_home)).table_path(context.asset_key.path[-1], partition, suffix)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        if isinstance(obj, AcceptedTable):
            obj.move_to(self._path(context, ".parquet"))  # written chunk by chunk by its asset
            return
        if isinstance(obj, pd.DataFrame):
            path = self._path(context, ".parquet")
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".parquet.tmp")
            obj.to_parquet(temporary, index=False)
        else:
            path = self._path(context, ".json")
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".json.tmp")
            temporary.write_text(json.dumps(obj, ensure_ascii=False, sort_keys=True))
        os.replace(temporary, path)  # readers never see a half-written table

    def load_input(self, context: dg.InputContext) -> Any:
        parquet = self._path(context, ".parquet")
        if parquet.exists():
            table = AcceptedTable(parquet)
            # An input annotated AcceptedTable reads lazily, in batches; anything else gets a frame.
            wanted = context.dagster_type.typing_type if context.dagster_type else None
            return table if wanted is AcceptedTable else table.to_pandas()
        return json.loads(self._path(context, ".json").read_text())
