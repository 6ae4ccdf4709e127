"""Built-in device targets for the analytical (roofline) cost model.

Peak FP32 throughput and memory bandwidth are the vendors' published figures;
``efficiency`` is the fraction of the roofline a framework sustains on
inference and ``overhead_us`` the fixed cost of launching one operator.
JALAD (Li et al., ICPADS 2018) modelled a TX2 at 2 TFLOP/s, a TK1 at
300 GFLOP/s and its cloud GPU at 12 TFLOP/s; we use the datasheet FP32 figures
instead and keep JALAD's TK1 number, which matches NVIDIA's at its clock.
INT8 rates (``int8_ops``) are the datasheets' dense figures, set only where a
datasheet gives one; ``Target.in_int8`` says how the others are priced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from splitc.errors import TargetError


@dataclass(frozen=True)
class Target:
    name: str
    role: str  # "edge" or "cloud": the side it is normally used on
    description: str
    peak_flops: float  # FLOP/s, FP32
    mem_bw: float  # bytes/s
    efficiency: float  # sustained fraction of the roofline
    overhead_us: float  # per-operator launch overhead
    source: str
    fp16_flops: float | None = None  # FLOP/s in FP16 where the hardware runs it faster than FP32
    precision: str = "fp32"  # the arithmetic the figures above are for
    int8_ops: float | None = None  # dense INT8 op/s (a MAC is two ops) where the vendor's datasheet gives one

    def in_fp16(self) -> "Target":
        """This device running FP16 (``--edge-precision fp16``): the FP16 peak, and half the bytes per value.

        Half the bytes is modelled as twice the memory bandwidth; efficiency and
        launch overhead are kept.
        """
        if self.precision == "fp16":
            return self
        if not self.fp16_flops:
            raise TargetError(f"target {self.name!r} has no FP16 rate above its FP32 one; use --edge-precision fp32")
        return replace(self, name=f"{self.name}-fp16", description=f"{self.description}, FP16",
                       peak_flops=self.fp16_flops, mem_bw=2 * self.mem_bw, precision="fp16")

    def in_int8(self) -> "Target":
        """This device running an INT8 (QDQ) edge half: the INT8 peak, and a quarter of the bytes per value.

        A quarter of the bytes is modelled as four times the memory bandwidth. A device without a
        published INT8 rate is priced at the rate it would run the half at instead, said in its
        description: its FP16 figures where it has them (a GPU without INT8 math runs such a half in
        FP16), else its FP32 peak with INT8 data (a CPU's INT8 kernels read a quarter of the bytes but
        multiply no faster than FP32 without dot-product instructions).
        """
        if self.precision == "int8":
            return self
        if self.int8_ops:
            return replace(self, name=f"{self.name}-int8", description=f"{self.description}, INT8",
                           peak_flops=self.int8_ops, mem_bw=4 * self.mem_bw, precision="int8")
        if self.fp16_flops:
            note = "INT8 priced at the FP16 rate (no INT8 rate published)"
            return replace(self.in_fp16(), name=f"{self.name}-int8", description=f"{self.description}, {note}",
                           precision="int8")
        note = "INT8 priced at the FP32 rate with INT8 data (no INT8 rate published)"
        return replace(self, name=f"{self.name}-int8", description=f"{self.description}, {note}",
                       mem_bw=4 * self.mem_bw, precision="int8")

    def to_dict(self) -> dict:
        return asdict(self)


_G, _T = 1e9, 1e12

TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        # INT8 (int8_ops): dense rates from the vendors' datasheets. TX2 (Pascal GP10B), Nano (Maxwell) and
        # TK1 (Kepler) list no INT8 rate; the Raspberry Pi 4's Cortex-A72 (Armv8.0-A) has no SDOT/UDOT
        # dot-product instructions (Armv8.2-A), so INT8 multiplies no faster than FP32 there; the GTX 1080 Ti,
        # TITAN Xp and Snapdragon 835 sheets give no INT8 figure, and the host VM has no datasheet. These are
        # priced as ``Target.in_int8`` says.
        # NVIDIA Jetson TX2 datasheet: 256-core Pascal @ 1.3 GHz = 665.6 GFLOP/s FP32; 128-bit LPDDR4 59.7 GB/s.
        Target("jetson-tx2", "edge", "NVIDIA Jetson TX2 (Pascal GPU)", 665.6 * _G, 59.7 * _G, 0.35, 15.0,
               "NVIDIA Jetson TX2 module datasheet", fp16_flops=1331.2 * _G),  # GP10B: FP16 at twice FP32
        # NVIDIA Jetson Nano datasheet: 128-core Maxwell @ 921.6 MHz = 235.9 GFLOP/s FP32 (472 FP16); LPDDR4 25.6 GB/s.
        Target("jetson-nano", "edge", "NVIDIA Jetson Nano (Maxwell GPU)", 235.9 * _G, 25.6 * _G, 0.35, 20.0,
               "NVIDIA Jetson Nano module datasheet", fp16_flops=471.6 * _G),
        # NVIDIA Jetson Orin Nano 8GB datasheet: 1024-core Ampere @ 625 MHz = 1.28 TFLOP/s FP32; LPDDR5 68 GB/s.
        # Its AI performance is 40 TOPS sparse INT8 (same datasheet), 20 TOPS dense.
        Target("jetson-orin-nano", "edge", "NVIDIA Jetson Orin Nano 8GB (Ampere GPU)", 1.28 * _T, 68.0 * _G, 0.4, 10.0,
               "NVIDIA Jetson Orin Nano series datasheet", int8_ops=20.0 * _T),
        # Raspberry Pi 4: 4x Cortex-A72 @ 1.5 GHz, 2x128-bit NEON FMA = 16 FLOP/cycle/core -> 96 GFLOP/s;
        # LPDDR4-3200 on a 32-bit bus = 12.8 GB/s.
        Target("raspberry-pi-4", "edge", "Raspberry Pi 4 Model B (4x Cortex-A72 CPU)", 96.0 * _G, 12.8 * _G, 0.2, 5.0,
               "Raspberry Pi 4 product brief; ARM Cortex-A72 software optimization guide"),
        # NVIDIA Tegra K1: 192-core Kepler, 300 GFLOP/s as modelled by JALAD (NVIDIA quotes 365 @ 950 MHz);
        # 64-bit LPDDR3 14.9 GB/s.
        Target("tegra-k1", "edge", "NVIDIA Tegra K1 (Kepler GPU)", 300.0 * _G, 14.9 * _G, 0.35, 25.0,
               "NVIDIA Tegra K1 whitepaper; JALAD section V"),
        # Qualcomm Snapdragon 835: Adreno 540 @ 710 MHz = 567 GFLOP/s FP32; dual-channel LPDDR4x-1866 29.8 GB/s.
        Target("snapdragon-835", "edge", "Qualcomm Snapdragon 835 (Adreno 540 GPU)", 567.0 * _G, 29.8 * _G, 0.25, 30.0,
               "Qualcomm Snapdragon 835 product brief", fp16_flops=1134.0 * _G),  # Adreno 5xx: FP16 at twice FP32
        # NVIDIA GeForce GTX 1080 Ti: 11.34 TFLOP/s FP32, 484 GB/s GDDR5X.
        Target("gtx-1080ti", "cloud", "NVIDIA GeForce GTX 1080 Ti", 11.34 * _T, 484.0 * _G, 0.5, 8.0,
               "NVIDIA GeForce GTX 1080 Ti specifications"),
        # NVIDIA TITAN Xp: 12.15 TFLOP/s FP32 (JALAD's 12 TFLOP/s cloud), 547.7 GB/s.
        Target("titan-xp", "cloud", "NVIDIA TITAN Xp (JALAD's cloud GPU class)", 12.15 * _T, 547.7 * _G, 0.5, 8.0,
               "NVIDIA TITAN Xp specifications; JALAD section V"),
        # NVIDIA T4: 8.1 TFLOP/s FP32, 130 INT8 TOPS, 320 GB/s GDDR6.
        Target("t4", "cloud", "NVIDIA T4", 8.1 * _T, 320.0 * _G, 0.5, 8.0, "NVIDIA T4 datasheet", int8_ops=130.0 * _T),
        # NVIDIA A100 40GB: 19.5 TFLOP/s FP32, 624 INT8 Tensor Core TOPS dense (1248 sparse), 1555 GB/s HBM2.
        Target("a100", "cloud", "NVIDIA A100 40GB", 19.5 * _T, 1555.0 * _G, 0.5, 6.0, "NVIDIA A100 datasheet",
               int8_ops=624.0 * _T),
        # NVIDIA H100 SXM5: 67 TFLOP/s FP32, 3958 INT8 Tensor Core TOPS with sparsity (1979 dense), 3.35 TB/s HBM3.
        Target("h100", "cloud", "NVIDIA H100 SXM5", 67.0 * _T, 3350.0 * _G, 0.5, 5.0, "NVIDIA H100 datasheet",
               int8_ops=1979.0 * _T),
        # host: the 2-vCPU AMD EPYC (Zen 4) VM splitc is developed on, one onnxruntime thread. A VM slice has no
        # datasheet: peak and bandwidth are the achieved single-thread numpy matmul GFLOP/s and copy GB/s (Zen 4's
        # 32 FP32 FLOP/cycle at the 2.6 GHz TSC clock would be 83 GFLOP/s per core), efficiency and overhead the
        # overall fit; bench/calibrate_host.py measures them into splitc/data/host_calibration.json, which wins.
        Target("host", "edge", "this machine: AMD EPYC VM, 1 onnxruntime thread (calibrated)", 101.2 * _G,
               24.56 * _G, 0.942, 0.181, "bench/calibrate_host.py (splitc/data/host_calibration.json)"),
    ]
}

DEFAULT_EDGE = "jetson-tx2"
DEFAULT_CLOUD = "t4"


def get_target(name: str) -> Target:
    """Look up a built-in target by name, with an error that lists the known ones."""
    try:
        return TARGETS[name]
    except KeyError as exc:
        known = ", ".join(TARGETS)
        raise TargetError(f"unknown target {name!r}; known targets: {known}") from exc
