"""The XID table's data file (launcher/system/data/xid-catalogue.tsv, NVIDIA's Xid catalogue transcribed), read as
the installed package ships it: its shape, and the rows the code and the README rely on."""

from __future__ import annotations

import csv
from importlib import resources

from launcher.system import xids


def _rows() -> list[dict[str, str]]:
    text = (resources.files("launcher.system") / "data" / xids.CATALOGUE).read_text(encoding="utf-8")
    return list(csv.DictReader((x for x in text.splitlines() if not x.startswith("#")), delimiter="\t"))


def test_every_row_parses_once_with_a_known_bucket() -> None:
    rows = _rows()
    numbers = [int(row["xid"]) for row in rows]
    assert numbers == list(range(1, 173))  # the catalogue's every Code, none twice, none skipped
    for row in rows:
        assert set(row) == {"xid", "mnemonic", "name", "bucket"} and None not in row.values(), row
        assert row["mnemonic"] and row["name"], row
        assert row["bucket"] in xids.BUCKETS, row
    assert set(xids.OURS) <= set(numbers)
    assert len(xids.catalogue()) == len(rows)


def test_the_rows_the_launcher_relies_on() -> None:
    expected = {
        13: ("RESTART_APP", xids.RESTART_APP),
        32: ("RESTART_APP", xids.RESTART_APP),  # once outside the table, and so a GPU reset (exit 71)
        69: ("RESTART_APP", xids.RESTART_APP),
        43: ("IGNORE", xids.RESTART_APP),  # ours: its app "must terminate"
        14: ("IGNORE", xids.NO_ACTION),
        45: ("WORKFLOW_XID_45", xids.NO_ACTION),
        63: ("IGNORE", xids.NO_ACTION),
        48: ("WORKFLOW_XID_48", xids.RESET_GPU),
        61: ("CONTACT_SUPPORT", xids.RESET_GPU),
        109: ("RESET_GPU", xids.RESET_GPU),
        79: ("RESTART_BM", xids.REBOOT_NODE),
        154: ("XID_154", xids.NO_ACTION),  # itself nothing: NVML's recovery action, read with it, decides
        163: ("", xids.NO_ACTION),  # ours: power smoothing only
        167: ("", xids.RESET_GPU),
    }
    for number, (bucket, action) in expected.items():
        entry = xids.xid(number)
        assert (entry.bucket, entry.action) == (bucket, action), number
    assert xids.xid(79).name == "GPU has fallen off the bus"
    assert xids.xid(61).name == "PMU_BREAKPOINT, Unused in the catalogue"
