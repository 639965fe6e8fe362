"""Autotuning per device: every ADNTN layer's candidates are compiled here, run and checked where a runner says
(`runners.py`: this machine, the devices of a TVM RPC tracker; `emulated.py`: an embedded target's bundles under
qemu, by instruction count), and the fastest (cheapest) correct one is kept as a record of the measuring device.

For each layer (one generator at one row count) the tuner times
- the plans: schedule (materialize, factored, stream) x contraction objective x the first `TREES` ranked
  contraction trees (`passes.order.search_path`), where they fit the memory budget, deduplicated by program;
- then the kernel policy of the fastest plan: each of its GEMMs' tiles (`policy.tile_candidates`: register tile,
  panel width, k unroll, k-blocking; on GPUs threads and shared-memory k tiles), one GEMM at a time, nearest the
  default first.
Every candidate is a real TVM build run on the device and compared with the reference interpreter (float64)
before it may win. At the end the fastest few and the default are timed again, interleaved; the default is kept
unless the fastest is faster beyond noise (`GAIN_MIN`).

Records are keyed by (the workload's structural hash, the device fingerprint `targets.fingerprint`, a remote's
or emulator's where one measured): one JSON file per fingerprint in the user's cache (`records_dir()`), and a copy
in every artifact compiled with them. `compile()` uses the records of this device (or of an embedded target's
emulator) automatically; records of another fingerprint are never used, and a remote's only for its target.
The measured flop and byte rates calibrate the plan cost model of the device, so untuned layers are planned with
them too. On a C bundle the plans also include recompute and the tiling of the tiled schedules, and the whole
program's call table is chosen last (`QemuRunner.program`)."""
from .measure import calibrate, fastest_config, tune, tune_layer
from .records import Applied, Records, applied, device_id, records_dir, workload_key

__all__ = ["Applied", "Records", "applied", "calibrate", "device_id", "fastest_config", "records_dir", "tune",
           "tune_layer", "workload_key"]
