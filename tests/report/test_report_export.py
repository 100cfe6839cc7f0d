"""Head-importance table: roles, ranking, and CSV / Parquet / JSON round trips."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from interp.errors import InterpError
from interp.report import DERIVED_COLUMNS, FORMATS, head_table, load_heads, write_exports
from interp.scanning import SCHEMA_VERSION, ScanResult, load_scan, write_scan


def _result(**columns) -> ScanResult:
    n = len(next(iter(columns.values())))
    heads = pd.DataFrame({"layer": np.arange(n) // 2, "head": np.arange(n) % 2, "kv_head": np.arange(n) % 2, **columns})
    return ScanResult(heads=heads, metadata={"schema_version": SCHEMA_VERSION, "columns": {c: f"meaning of {c}" for c in columns}})


def test_roles_follow_the_documented_thresholds():
    result = _result(
        sink_mass=[0.95, 0.95, 0.6, 0.1, 0.5, 0.0],
        previous_token_score=[0.0, 0.0, 0.0, 0.9, 0.51, 0.5],
        duplicate_token_score=[0.0, 0.0, 0.0, 0.0, 0.0, 0.31],
        induction_score=[0.0, 0.8, 0.0, 0.0, 0.0, 0.4],
    )
    roles = head_table(result)["roles"].tolist()
    # 0.95 sink: dormant; an induction head on the sink is not dormant; 0.5 is not > 0.5.
    assert roles == ["sink;dormant", "sink;induction", "sink", "previous_token", "previous_token", "duplicate_token;induction"]


def test_retrieval_role_matches_retrieval_head_and_long_range_needs_the_kv_score():
    result = _result(
        retrieval_score=[0.0, 0.1, 0.11, 0.9],
        retrieval_head=[False, False, True, True],
        streaming_score_kv=[0.6, 0.5, 0.0, np.nan],
    )
    assert head_table(result)["roles"].tolist() == ["long_range", "", "retrieval", "retrieval"]


def test_importance_prefers_the_ablation_delta_and_ranks_nan_last():
    result = _result(induction_score=[0.9, 0.1, 0.5, 0.2], head_ablation_loss_delta=[0.01, 0.3, np.nan, 0.2])
    table = head_table(result)
    assert table["importance_rank"].tolist() == [3, 1, 4, 2]
    assert table.attrs["importance_basis"] == "head_ablation_loss_delta"
    without = head_table(_result(induction_score=[0.9, 0.1, 0.5, 0.2], previous_token_score=[0.0, 0.95, 0.0, 0.0]))
    assert without["importance"].tolist() == [0.9, 0.95, 0.5, 0.2]
    assert without["importance_rank"].tolist() == [2, 1, 3, 4]


def test_table_schema_is_the_scan_columns_plus_the_documented_derived_ones(small_scan):
    table = head_table(small_scan)
    scan_columns = list(small_scan.heads.columns)
    assert list(table.columns) == scan_columns + ["roles", "importance", "importance_rank"] == scan_columns + list(DERIVED_COLUMNS)
    assert len(table) == 30 * 9
    assert sorted(table["importance_rank"]) == list(range(1, 271))
    assert table.dtypes["importance_rank"] == "int64" and table.dtypes["layer"] == "int64"
    assert str(table.dtypes["roles"]) == "str"
    # The shipped model has previous-token and induction heads even at 48 tokens.
    assert table["roles"].str.contains("previous_token").any() and table["roles"].str.contains("induction").any()
    assert head_table(ScanResult(table, small_scan.metadata)).equals(table)  # idempotent


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_keeps_values_and_dtypes(small_scan, tmp_path, fmt):
    table = head_table(small_scan)
    table.loc[3, "entropy_mean"] = np.nan  # missing values survive too
    (path,) = write_exports(table, tmp_path, formats=[fmt], columns={"layer": "0-based layer"})
    loaded = load_heads(path)
    pd.testing.assert_frame_equal(loaded, table, check_exact=True)
    assert load_heads(tmp_path).equals(loaded)


def test_schema_version_in_the_file_metadata(small_scan, tmp_path):
    write_exports(small_scan, tmp_path)
    metadata = pq.read_schema(tmp_path / "heads.parquet").metadata
    assert int(metadata[b"interp.schema_version"]) == SCHEMA_VERSION
    assert json.loads(metadata[b"interp.columns"])["roles"] == DERIVED_COLUMNS["roles"]
    document = json.loads((tmp_path / "heads.json").read_text())
    assert document["schema_version"] == SCHEMA_VERSION
    assert list(document["columns"]) == list(head_table(small_scan).columns)
    assert len(document["rows"]) == 270 and document["rows"][0]["layer"] == 0


def test_exports_refresh_the_scans_own_csv_but_never_clobber_other_data(small_scan, tmp_path):
    write_scan(small_scan, tmp_path / "scan")
    write_exports(small_scan, tmp_path / "scan")  # heads.csv grows the derived columns
    pd.testing.assert_frame_equal(load_scan(tmp_path / "scan").heads.drop(columns=list(DERIVED_COLUMNS)), small_scan.heads)
    other = small_scan.heads.assign(sink_mass=0.0)
    with pytest.raises(InterpError, match="overwrite"):
        write_exports(ScanResult(other, small_scan.metadata), tmp_path / "scan", formats=["json"])
    write_exports(ScanResult(other, small_scan.metadata), tmp_path / "scan", formats=["json"], overwrite=True)
    assert (load_heads(tmp_path / "scan" / "heads.json")["sink_mass"] == 0).all()
    with pytest.raises(InterpError, match="unknown export format"):
        write_exports(small_scan, tmp_path, formats=["xlsx"])
