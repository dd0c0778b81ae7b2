"""Write ``src/crdetect/weights/pretrained.json``: each shipped checkpoint's file, SHA-256, architecture, threshold
and preprocessing, read from the files (run after changing a shipped model; the tests check the table).

    python scripts/pretrained_table.py
"""

import json

from crdetect.pretrained import TABLE, WEIGHTS_DIR, describe_weights

if __name__ == "__main__":
    (WEIGHTS_DIR / TABLE).write_text(json.dumps(describe_weights(WEIGHTS_DIR), indent=1) + "\n")
    print(f"wrote {WEIGHTS_DIR / TABLE}")
