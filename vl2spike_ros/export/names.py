"""Option names shared by the export modules and the CLI (no heavy imports here)."""
from __future__ import annotations

# what to do with a max-pool on the membrane input (no NIR equivalent): see export.spec
MAXPOOL_SPIKE_OR, MAXPOOL_ERROR = "spike-or", "error"
MAXPOOL_POLICIES = (MAXPOOL_SPIKE_OR, MAXPOOL_ERROR)
# hardware-style variants of the exported network: see export.variants
FLOAT, INT8, IAF, INT8_IAF = "float", "int8", "iaf", "int8-iaf"
VARIANTS = (FLOAT, INT8, IAF, INT8_IAF)
