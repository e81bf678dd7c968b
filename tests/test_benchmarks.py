"""benchmarks.attention_memory runs end to end at tiny sizes, and chunked saves memory."""

from __future__ import annotations

import json

from benchmarks import attention_memory


def test_attention_memory_smoke(tmp_path, monkeypatch):
    from attn_jax.attention import dispatch

    table_path = tmp_path / "cpu_dispatch.json"
    monkeypatch.setattr(dispatch, "CPU_TABLE_PATH", table_path)
    dispatch.cpu_table.cache_clear()
    try:
        result = attention_memory.main(["--seq-lens", "64", "512", "--repeats", "1", "--no-sweep",
                                        "--dense-bwd-max", "64", "--out-dir", str(tmp_path),
                                        "--write-dispatch-table"])
        # the auto rows ran after this run's own table was written, and read it
        assert result["dispatch_table"].endswith("written by this run before its auto rows")
        written = json.loads(table_path.read_text())
        assert dispatch.cpu_table() == written and {e["seq_len"] for e in written["entries"]} == {64}
    finally:
        dispatch.cpu_table.cache_clear()
    assert [r["path"] for r in result["rows"]][-1] == "auto"
    files = {p.name for p in tmp_path.iterdir()}
    stem = f"attention_memory_{result['device']}"
    assert {f"{stem}.json", f"{stem}.png"} <= files
    saved = json.loads((tmp_path / f"{stem}.json").read_text())
    assert saved["jax_version"] and saved["device"] and len(saved["matmul_gflops"]) == 2
    rows = {(r["path"], r["seq_len"], r["mask"], r["heads"], r["mode"]): r for r in saved["rows"]}
    assert len(rows) == 2 * 2 * 2 * 2 * len(attention_memory.PATHS)
    if saved["tokamax_version"] is None:
        assert rows["tokamax_xla", 64, "full", "N=K", "fwd"]["note"].startswith("absent")
    assert "time_s" not in rows["xla", 512, "full", "N=K", "fwd+bwd"]  # capped by --dense-bwd-max
    chunked = rows["chunked", 512, "causal", "GQA 4:1", "fwd+bwd"]
    assert chunked["time_s"] > 0 and chunked["gflops"] > 0
    assert rows["auto", 64, "full", "N=K", "fwd"]["resolved"] in ("xla", "chunked")
    # at T = 512 the CPU chunks (256 x 256) split both axes: less temporary memory than jax.nn's dense logits
    assert rows["chunked", 512, "full", "N=K", "fwd"]["temp_bytes"] < rows["jax_nn", 512, "full", "N=K", "fwd"][
        "temp_bytes"]
    text = attention_memory.markdown(saved)
    assert "written by this run before its auto rows" in text
    assert "ours chunked" in text and "Worst cell" in text
    table = attention_memory.dispatch_table(saved)
    assert table["mode"] == "fwd+bwd" and {e["seq_len"] for e in table["entries"]} == {64}


def test_readme_block_update(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- attention_memory:begin -->\nold\n<!-- attention_memory:end -->\nrest\n")
    attention_memory.update_readme("NEW TABLE", readme)
    text = readme.read_text()
    assert "NEW TABLE" in text and "old" not in text and text.startswith("intro") and text.endswith("rest\n")


def test_flash_attention_script_smoke_on_cpu(tmp_path):
    """The GPU benchmark's code path, run tiny in interpret mode (its numbers mean nothing and say so)."""
    from benchmarks import flash_attention

    result = flash_attention.main(["--allow-cpu", "--seq-lens", "32", "--head-dims", "16", "--tokens", "64",
                                   "--hidden", "32", "--repeats", "1", "--matmul-size", "64",
                                   "--causal", "true", "--out-dir", str(tmp_path)])
    stem = f"flash_attention_{result['device']}"
    assert (tmp_path / f"{stem}.json").exists() and (tmp_path / f"{stem}.png").exists()
    assert result["interpret"] is (result["platform"] == "cpu")
    ok = [r for r in result["rows"] if "tflops" in r]
    assert {r["impl"] for r in ok} >= {"pallas_triton", "xla"}
    assert {r["mode"] for r in ok} == {"fwd", "bwd", "fwd+bwd"}
    assert "INTERPRET MODE" in flash_attention.markdown(result)


def test_flash_attention_refuses_cpu_without_flag():
    import pytest

    from benchmarks import flash_attention

    if flash_attention.jax.default_backend() == "gpu":
        pytest.skip("on a GPU the benchmark runs")
    with pytest.raises(SystemExit, match="needs a GPU"):
        flash_attention.main(["--seq-lens", "32"])


def test_additive_attention_smoke(tmp_path):
    from benchmarks import additive_attention

    result = additive_attention.main(["--seq-lens", "64", "512", "--attn-dims", "128", "--repeats", "1",
                                      "--out-dir", str(tmp_path), "--max-run-gib", "0.05"])
    stem = f"additive_attention_{result['device']}"
    assert (tmp_path / f"{stem}.json").exists() and (tmp_path / f"{stem}.png").exists()
    rows = {(r["impl"], r["mode"], r["seq_len"]): r for r in result["rows"]}
    # dense fwd+bwd at T=512, A=128 holds [512, 512, 128] float32 features (128 MiB): over the run limit
    assert "skipped" in rows["xla", "fwd+bwd", 512]
    assert "time_s" in rows["chunked", "fwd+bwd", 512]
    assert result["ratios"]["chunked|fwd+bwd|512|128"]["memory_ratio"] > 2
    assert "memory saved" in additive_attention.markdown(result)


def test_decode_attention_script_smoke_on_cpu(tmp_path):
    from benchmarks import decode_attention

    result = decode_attention.main(["--allow-cpu", "--seq-lens", "64", "--batches", "2", "--heads", "4",
                                    "--kv-heads", "2", "--head-dim", "16", "--repeats", "1", "--copy-mib", "4",
                                    "--out-dir", str(tmp_path)])
    assert (tmp_path / f"decode_attention_{result['device']}.json").exists()
    assert {r["impl"] for r in result["rows"] if "gb_per_s" in r} == {"pallas", "xla"}
    assert "INTERPRET MODE" in decode_attention.markdown(result)


def test_tpu_model_prefers_blocks_that_fit(tmp_path):
    from benchmarks import tpu_model

    result = tpu_model.main(["--seq-len", "4096", "--out", str(tmp_path / "m.json")])
    for chip in ("v5e", "v5p", "v6e"):
        best = result["chips"][chip]["best"]
        assert best["fits_vmem"]
        assert best["bound_s"] == min(r["bound_s"] for r in result["chips"][chip]["candidates"] if r["fits_vmem"])
    tiny = tpu_model.main(["--seq-len", "4096", "--vmem-mib", "0.5", "--out", str(tmp_path / "t.json")])
    assert all(r["vmem_bytes"] <= 0.5 * 2**20 for r in [tiny["chips"]["v5e"]["best"]] if r)


def test_transformer_step_script_smoke_on_cpu(tmp_path):
    from benchmarks import transformer_step

    result = transformer_step.main(["--allow-cpu", "--layers", "1", "--d-model", "32", "--heads", "4", "--kv-heads",
                                    "2", "--seq", "32", "--batch", "2", "--vocab", "64", "--repeats", "1",
                                    "--implementations", "xla", "chunked", "--out-dir", str(tmp_path)])
    assert [r["implementation"] for r in result["rows"]] == ["xla", "chunked"]
    assert all(r["tokens_per_s"] > 0 and r["mfu"] is None for r in result["rows"])  # no peak known for a CPU
    assert (tmp_path / "transformer_step_cpu.json").exists()
    assert "CPU SMOKE RUN" in transformer_step.markdown(result)
    cfg = transformer_step.TransformerConfig(vocab_size=10, d_model=4, num_heads=2, d_ff=8, decoder_layers=1)
    # 1 layer: q,k,v,o 4*16 + mlp 2*32 = 128; output projection 40 -> 6*168 + 6*1*T*4
    assert transformer_step.model_flops_per_token(cfg, 5) == 6 * 168 + 6 * 5 * 4


def test_transformer_step_lm_experiment_compares_with_jax_nn(tmp_path, monkeypatch):
    """--lm-experiment: the experiment's LM sizes, our attention beside jax.nn's through attention_fn."""
    from benchmarks import transformer_step

    def tiny(args):  # the real sizes take minutes on CPU; keep the code path, shrink the model
        args.layers, args.d_model, args.heads, args.kv_heads, args.d_ff = 1, 16, 2, 0, 32
        args.seq, args.batch, args.vocab, args.dtype, args.positions, args.norm = 16, 2, 20, "float32", "rope", "pre"

    monkeypatch.setattr(transformer_step, "lm_experiment_args", tiny)
    result = transformer_step.main(["--lm-experiment", "--repeats", "1", "--out-dir", str(tmp_path)])
    assert [r["implementation"] for r in result["rows"]] == list(transformer_step.LM_IMPLEMENTATIONS)
    assert all(r["tokens_per_s"] > 0 for r in result["rows"])
    assert result["loss_spread"] < 1e-4  # the same parameters and batch: the same first loss
    assert (tmp_path / "transformer_step_lm_cpu.json").exists()
    assert "attention_fn" in transformer_step.markdown(result)


def test_ring_attention_benchmark_runs_and_writes_its_table(tmp_path):
    """The script's whole path at tiny sizes on this process's devices (one CPU device: a ring of one)."""
    from benchmarks import ring_attention

    result = ring_attention.main(["--seq-lens", "64", "128", "--time-max", "64", "--repeats", "1", "--heads", "2",
                                  "--head-dim", "8", "--out-dir", str(tmp_path)])
    stem = f"ring_attention_{result['device']}"
    assert (tmp_path / f"{stem}.json").exists() and (tmp_path / f"{stem}.png").exists()
    rows = {(r["impl"], r["seq_len"], r["causal"]): r for r in result["rows"]}
    assert len(rows) == 8 and not any("error" in r for r in rows.values())
    assert "seconds" in rows["ring", 64, True] and "seconds" not in rows["ring", 128, True]  # --time-max
    assert {"commit", "command", "device", "date"} <= set(result["provenance"])
    text = ring_attention.markdown(result)
    assert "| 128 | causal |" in text and "all-gather" in text
