"""Regenerate hw/include/edgevit/tables.h from edgevit/hls/tables.py (run after changing a table)."""

from edgevit.hls.tables import HEADER_PATH, header_text

if __name__ == "__main__":
    HEADER_PATH.write_text(header_text())
    print(f"wrote {HEADER_PATH}")
