"""The text the `adntn` commands print: pure functions from what a command found to a string."""
from __future__ import annotations

from ..memory import fmt_bytes


def interface(info: dict) -> str:
    """`(2, 3, 32, 32) -> (2, 10)`; named, with dtypes and token tables, when there are several or integers."""
    ins, outs = info.get("inputs"), info.get("outputs")
    if not ins or (len(ins) == 1 and len(outs) == 1 and ins[0]["dtype"] == "float32"):
        return f"{tuple(info['input_shape'])} -> output {tuple(info['output_shape'])}"

    def one(i: dict) -> str:
        dtype = i.get("dtype", "float32")
        return f"{i['name']} {tuple(i['shape'])}" + (f" {dtype}" if dtype != "float32" else "") + (
            f" ids < {i['rows']:,}" if "rows" in i else "")
    return f"{', '.join(map(one, ins))} -> output {', '.join(map(one, outs))}"


def artifact_info(path: str, info: dict, tuning_mismatch: str | None = None) -> str:
    """`adntn info` of an artifact; `tuning_mismatch`: why this machine is not the one it was tuned on."""
    t = info["target"]
    lines = [f"{path}: {info['format']} v{info['version']} (adntn {info['adntn_version']}, "
             f"tvm {info['tvm_version']})",
             f"  target {t['name']}: {t['device']} {t['arch']}, {t['lanes']} float32 lanes, TVM {t['tvm']}; "
             f"needs {', '.join(t['isa']) or 'no ISA extensions'}"]
    if "gpu" in info:
        lines.append("  " + gpu_line(info["gpu"]))
    lines.append(f"  batch {info['batch_size']}, input {interface(info)}, {info['tensor_params']:,} stored "
                 f"parameters, library "
                 f"{info['library_bytes']:,} bytes, {len(info['kernels'])} kernels")
    lines.append(f"  signed by {info['signer'] or 'nobody'}"
                 + (" (trusted here)" if info["signed_by_trusted_key"] else " (NOT trusted here)" if info["signer"]
                    else ""))
    for name, mem in info["memory"].items():
        lines.append(f"  {name} program: arena {mem['arena_bytes']:,} bytes (without reuse "
                     f"{mem['unshared_bytes']:,}), constants {mem['const_bytes']:,} bytes")
    if "tuning" in info:
        lines.append("  " + tuning_line(info["tuning"], tuning_mismatch))
    for lay in info["layers"]:
        if lay["kind"].startswith("adntn"):
            tu = lay.get("tuned")
            lines.append(f"  {lay['path']:<14} {lay['generator']}  {lay['ratio']:,.0f}x, {lay['params']:,} params, "
                         f"schedule {lay['schedule']}{' + bias' if lay.get('bias') else ''}"
                         + (f", tuned: {tu['gain']:.2f}x over the default ({1e3 * tu['tuned_s']:.3f} ms)" if tu
                            else ""))
        elif "shape" in lay:
            lines.append(f"  {lay['path']:<14} {lay['kind']} {tuple(lay['shape'])}")
        else:
            lines.append(f"  {lay['path']:<14} {lay['kind']} {lay.get('fn', lay.get('into', ''))}")
    return "\n".join(lines)


def tuning_line(t: dict, mismatch: str | None) -> str:
    """Which device the artifact was tuned on, and whether that is this machine (`mismatch` None)."""
    where = ("this machine" if mismatch is None
             else f"another device ({mismatch}); recompile here to use this device's records")
    return f"tuned on device {t['device']}: {t['layers']} layer(s) from tuning records; tuned for {where}"


def gpu_line(g: dict) -> str:
    if g["api"] == "opencl":
        return f"GPU: OpenCL C, {g['kernels']} kernels ({g['launches']} device launches), built at load time"
    px = (g.get("ptxas") or {}).values()
    return (f"GPU: CUDA {g['arch']} cubin (nvcc {g.get('cuda_version')}), {g['kernels']} kernels; ptxas: at most "
            f"{max((r['registers'] for r in px), default=0)} registers and {max((r['smem'] for r in px), default=0):,} "
            f"bytes of shared memory per kernel, {sum(r['spill_stores'] + r['spill_loads'] for r in px)} bytes spilled")


def bundle_info(path: str, info: dict) -> str:
    """`adntn info` of a C bundle: its estimate, and its linked sizes where it was built (`info["size"]`)."""
    t, m = info["target"], info["memory"]
    lines = [f"{path}: {info['format']} v{info['version']}, target {t['name']} ({t['device']} {t['arch']}, "
             f"TVM {t['tvm']})",
             f"  batch {info['batch_size']}, input {interface(info)}, {len(info['kernels'])} kernels, "
             f"{info['calls']} calls",
             f"  estimate: RAM {m['ram_bytes']:,} bytes (arena {m['arena_bytes']:,}, without reuse "
             f"{m['unshared_bytes']:,}; workspace {m['workspace_bytes']:,}), weights {m['weight_bytes']:,} bytes "
             f"(flash)"]
    budget = info["budget"] or {}
    if budget.get("ram_bytes") or budget.get("flash_bytes"):
        lines.append(f"  board budget: RAM {budget.get('ram_bytes') or 'any'}, "
                     f"flash {budget.get('flash_bytes') or 'any'}")
    sz = info["size"]
    if sz:
        lines.append(f"  linked (libadntn_model.a): flash {sz['model_flash_bytes']:,} bytes (weights "
                     f"{m['weight_bytes']:,} + code {sz['code_bytes']:,}), RAM {sz['model_ram_bytes']:,} bytes; "
                     f"test program: flash {sz['program_flash_bytes']:,}, RAM {sz['program_ram_bytes']:,} (static, "
                     f"without stack and heap)")
    else:
        lines.append(f"  linked sizes: unavailable ({info['size_unavailable']})")
    for lay in info["layers"]:
        if lay["kind"].startswith("adntn"):
            lines.append(f"  {lay['path']:<14} {lay['generator']}  {lay['ratio']:,.0f}x, {lay['params']:,} params, "
                         f"schedule {lay['schedule']}")
    return "\n".join(lines)


def run_report(artifact: str, out: dict, output: str | None, repeats: int, target: str | None) -> str:
    """`adntn run` without --json; `out` is what --json would print, `target` the emulated one of a C bundle."""
    ins, outs = (", ".join(str(tuple(s)) for s in out[k]) for k in ("inputs", "outputs"))
    lines = [f"ran {artifact}: input {ins} -> output {outs}"
             + (f", wrote {output}" if output else "")]
    if "instructions" in out:
        lines.append(f"  {out['instructions']:,} instructions per inference on the emulated {target}")
    if "median_s" in out:
        lines.append(f"  median latency {1e3 * out['median_s']:.3f} ms over {repeats} calls")
    if "max_abs_error" in out:
        lines.append(f"  against the reference interpreter: max abs error {out['max_abs_error']:.2e}, "
                     f"max relative error {out['max_rel_error']:.2e}")
    return "\n".join(lines)


def tuned_layers(layers: list[dict], rates: dict | None, unit: str = "s", program: dict | None = None) -> str:
    """`adntn tune`: each tuned layer's gain over its default (seconds, or a qemu runner's instructions), the
    calibrated cost model and a C bundle's call-table choice ("" if none of them)."""
    show = (lambda v: f"{1e3 * v:.3f} ms") if unit == "s" else (lambda v: f"{v:,.0f} instructions")  # noqa: E731
    lines = []
    for lay in layers:
        if "tuned" in lay:
            tu = lay["tuned"]
            lines.append(f"  {lay['path']:<14} {lay['schedule']:<11} default {show(tu['default_s'])} -> tuned "
                         f"{show(tu['tuned_s'])} ({tu['gain']:.2f}x)")
    if program and "call_table" in program:
        i, t = program["inline"], program["table"]
        lines.append(f"  calls: {'a call table' if program['call_table'] else 'straight-line'} (straight-line "
                     f"{i['instructions']:,} instructions, {i['flash_bytes']:,} B flash; table {t['instructions']:,}, "
                     f"{t['flash_bytes']:,} B)")
    if rates:
        lines.append(f"  calibrated cost model: {rates['flop_rate'] / 1e9:.1f} GFLOP/s, "
                     f"{rates['byte_rate'] / 1e9:.1f} GB/s")
    return "\n".join(lines)


def explain(report: dict, num_params: int, batch: int, steps: bool = True) -> str:
    """`adntn explain` of one generator: `report` is its --json report; `steps`: list each schedule's steps."""
    chosen, schedules, train = report["auto"], report["schedules"], report.get("backward")
    lines = [f"{'layer ' + report['layer'] + ': ' if report['layer'] else ''}{report['generator']}",
             f"  {num_params:,} parameters, {report['ratio']:,.0f}x, batch {batch}"]
    for s, p in schedules.items() if steps else ():
        lines.append(f"\n== {s}{'  (auto picks this)' if s == chosen else ''}")
        lines.append(f"  {'where':<5} {'equation':<40} {'flops':>12} {'output':>12}  path")
        for st in p["steps"]:
            eq = st["equation"] if len(st["equation"]) <= 40 else st["equation"][:37] + "..."
            lines.append(f"  {st['where']:<5} {eq:<40} {st['flops']:>12.3g} {str(st['shape']):>12}  {st['path']}")
    lines.append(f"\n{'schedule':<12} {'flops/call':>12} {'bytes/call':>12} {'load flops':>12} {'resident':>12} "
                 f"{'peak/call':>12}")
    for s, p in schedules.items():
        lines.append(f"{s:<12} {p['flops_per_call']:>12.3g} {fmt_bytes(p['bytes_per_call']):>12} "
                     f"{p['load_flops']:>12.3g} {fmt_bytes(p['resident_bytes']):>12} "
                     f"{fmt_bytes(p['peak_bytes']):>12}{'  <- auto' if s == chosen else ''}")
    if train:
        lines.append(f"\ntraining step (forward + backward), batch {batch}:")
        for k, c in train.items():
            lines.append(f"  {k:<10} {c['flops']:>12.3g} flops  peak {fmt_bytes(c['peak_bytes']):>12}  "
                         f"({c['nodes']} nodes)")
    return "\n".join(lines) + "\n"  # a blank line after each layer

