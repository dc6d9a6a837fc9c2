"""`python -m lib.charts page [DVC_DIR]` (run by setup.sh)."""
from lib.charts import main

raise SystemExit(main())
