"""Instructions per mask element: the dropout-mask kernel against torch.compile's per-element draw.

Compiles both for a GPU architecture (sm_90 by default) with Triton's bundled ptxas, so it needs
Triton but no GPU, and counts the SASS instructions each thread runs per mask element. The second
kernel is what inductor generates for dropout's random numbers: ``tl.rand(seed, offset)`` per
element, one Philox call each. An instruction count is not a time; ``cuda_checks.py dropout_mask``
times the kernels on a GPU.

    python benchmarks/kernel_sass.py            # sm_90 (Hopper)
    python benchmarks/kernel_sass.py 80         # sm_80 (Ampere)
"""

from __future__ import annotations

import collections
import re
import sys

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from gptkit.kernels import DROPOUT_BLOCK, _dropout_mask_kernel

NUM_WARPS = 4  # Triton's default, used by both launches


@triton.jit
def per_element_rand(seed_ptr, mask_ptr, n, p, BLOCK: tl.constexpr):
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    keep = tl.rand(tl.load(seed_ptr), idx.to(tl.uint32)) >= p
    tl.store(mask_ptr + idx, keep.to(tl.uint8), mask=idx < n)


def sass_ops(fn, signature: dict, constexprs: dict, arch: int) -> collections.Counter:
    compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                              target=GPUTarget("cuda", arch, 32))
    ops: collections.Counter = collections.Counter()
    for line in compiled.asm["sass"].splitlines():
        if re.match(r"^[-0-9]{2}:", line) and "\t" in line:  # an instruction, after its scheduling prefix
            ops[re.sub(r"^@!?U?P\w+\s+", "", line.split("\t", 1)[1].strip()).split()[0].split(".")[0]] += 1
    return ops


def main() -> None:
    arch = int(sys.argv[1]) if len(sys.argv) > 1 else 90
    threads = NUM_WARPS * 32
    mask_sig = {"seed_ptr": "*i64", "mask_ptr": "*u8", "n": "i64", "threshold": "i32",
                "BLOCK": "constexpr", "EVEN": "constexpr"}
    rand_sig = {"seed_ptr": "*i64", "mask_ptr": "*u8", "n": "i64", "p": "fp32", "BLOCK": "constexpr"}
    rows = [
        ("dropout_mask kernel (4 per Philox call)", sass_ops(_dropout_mask_kernel, mask_sig,
         {"BLOCK": DROPOUT_BLOCK, "EVEN": True}, arch), 4 * DROPOUT_BLOCK // threads),
        ("dropout_mask kernel, ragged last program", sass_ops(_dropout_mask_kernel, mask_sig,
         {"BLOCK": DROPOUT_BLOCK, "EVEN": False}, arch), 4 * DROPOUT_BLOCK // threads),
        ("per-element tl.rand (torch.compile)", sass_ops(per_element_rand, rand_sig,
         {"BLOCK": DROPOUT_BLOCK}, arch), DROPOUT_BLOCK // threads),
    ]
    print(f"sm_{arch}, Triton {triton.__version__}: SASS instructions per mask element")
    for name, ops, per_thread in rows:
        total = sum(ops.values())
        print(f"  {name:<42} {total / per_thread:6.1f}   (integer multiplies {ops['IMAD'] / per_thread:5.1f})")


if __name__ == "__main__":
    main()
