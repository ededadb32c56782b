"""AXI4 and AXI4-Lite interface signatures, and flat port names for the top level.

Signatures are written from the master's side (the master drives `awaddr`, the slave
`awready`); a slave port is ``In(signature)``. At the top level the members are flattened
into ports named ``<prefix>_<signal>`` (``s_axil_awaddr``, ``m_axi_arlen``), the names
cocotbext-axi and Vivado's interface inference expect.
"""

from __future__ import annotations

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["axi4_lite_signature", "axi4_signature", "AXI_OKAY", "AXI_SLVERR", "AXI_DECERR", "AXI_INCR"]

AXI_OKAY, AXI_EXOKAY, AXI_SLVERR, AXI_DECERR = 0, 1, 2, 3
AXI_INCR = 1


def axi4_lite_signature(addr_bits: int, data_bits: int = 32) -> wiring.Signature:
    return wiring.Signature(
        {
            "awaddr": Out(addr_bits),
            "awprot": Out(3),
            "awvalid": Out(1),
            "awready": In(1),
            "wdata": Out(data_bits),
            "wstrb": Out(data_bits // 8),
            "wvalid": Out(1),
            "wready": In(1),
            "bresp": In(2),
            "bvalid": In(1),
            "bready": Out(1),
            "araddr": Out(addr_bits),
            "arprot": Out(3),
            "arvalid": Out(1),
            "arready": In(1),
            "rdata": In(data_bits),
            "rresp": In(2),
            "rvalid": In(1),
            "rready": Out(1),
        }
    )


def axi4_signature(addr_bits: int, data_bits: int, id_bits: int) -> wiring.Signature:
    return wiring.Signature(
        {
            "awid": Out(id_bits),
            "awaddr": Out(addr_bits),
            "awlen": Out(8),
            "awsize": Out(3),
            "awburst": Out(2),
            "awvalid": Out(1),
            "awready": In(1),
            "wdata": Out(data_bits),
            "wstrb": Out(data_bits // 8),
            "wlast": Out(1),
            "wvalid": Out(1),
            "wready": In(1),
            "bid": In(id_bits),
            "bresp": In(2),
            "bvalid": In(1),
            "bready": Out(1),
            "arid": Out(id_bits),
            "araddr": Out(addr_bits),
            "arlen": Out(8),
            "arsize": Out(3),
            "arburst": Out(2),
            "arvalid": Out(1),
            "arready": In(1),
            "rid": In(id_bits),
            "rdata": In(data_bits),
            "rresp": In(2),
            "rlast": In(1),
            "rvalid": In(1),
            "rready": Out(1),
        }
    )


def flat_members(prefix: str, sig: wiring.Signature, flipped: bool) -> dict:
    """Members of `sig` as top-level ports named prefix_name (flipped: the slave's side)."""
    out = {}
    for name, member in sig.members.items():
        out[f"{prefix}_{name}"] = member.flip() if flipped else member
    return out


def connect_flat(m, owner, prefix: str, iface) -> None:
    """Wire the flat top-level ports `owner.<prefix>_<name>` to the members of `iface` (an
    interface of a submodule facing the same way as those ports)."""
    for name in iface.signature.members:
        port = getattr(owner, f"{prefix}_{name}")
        inner = getattr(iface, name)
        if owner.signature.members[f"{prefix}_{name}"].flow == Out:
            m.d.comb += port.eq(inner)
        else:
            m.d.comb += inner.eq(port)
