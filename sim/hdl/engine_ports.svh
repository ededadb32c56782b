// engine_ports.svh: the top-level ports of the engine harnesses (sim/hdl/rtl_top.sv,
// tests/hw/tb_engine.sv), included inside their port lists.
//
// These are all cocotb sees: each is marked public here (inputs read-write, outputs read-only)
// and the harnesses are built without --public-depth, so that Verilator treats nothing else
// as an input (simulation speed: rtl_top.sv's header). The clock (driven by the C++ main loop,
// sim/hdl/harness_main.cpp), the register port (s_axil_*), the interrupt, the DRAM model's
// bulk port and counters (dram_*) and a cycle counter.

    input  wire         clk /*verilator public_flat_rd*/,  // toggled by harness_main.cpp; cocotb only watches it
    input  wire         rst /*verilator public_flat_rw*/,

    input  wire  [11:0] s_axil_awaddr /*verilator public_flat_rw*/,
    input  wire  [2:0]  s_axil_awprot /*verilator public_flat_rw*/,
    input  wire         s_axil_awvalid /*verilator public_flat_rw*/,
    output logic        s_axil_awready /*verilator public_flat_rd*/,
    input  wire  [31:0] s_axil_wdata /*verilator public_flat_rw*/,
    input  wire  [3:0]  s_axil_wstrb /*verilator public_flat_rw*/,
    input  wire         s_axil_wvalid /*verilator public_flat_rw*/,
    output logic        s_axil_wready /*verilator public_flat_rd*/,
    output logic [1:0]  s_axil_bresp /*verilator public_flat_rd*/,
    output logic        s_axil_bvalid /*verilator public_flat_rd*/,
    input  wire         s_axil_bready /*verilator public_flat_rw*/,
    input  wire  [11:0] s_axil_araddr /*verilator public_flat_rw*/,
    input  wire  [2:0]  s_axil_arprot /*verilator public_flat_rw*/,
    input  wire         s_axil_arvalid /*verilator public_flat_rw*/,
    output logic        s_axil_arready /*verilator public_flat_rd*/,
    output logic [31:0] s_axil_rdata /*verilator public_flat_rd*/,
    output logic [1:0]  s_axil_rresp /*verilator public_flat_rd*/,
    output logic        s_axil_rvalid /*verilator public_flat_rd*/,
    input  wire         s_axil_rready /*verilator public_flat_rw*/,
    output logic        irq /*verilator public_flat_rd*/,

    input  wire         dram_load /*verilator public_flat_rw*/,
    input  wire         dram_dump /*verilator public_flat_rw*/,
    input  wire  [31:0] dram_dump_first /*verilator public_flat_rw*/,
    input  wire  [31:0] dram_dump_last /*verilator public_flat_rw*/,
    output logic [63:0] dram_rd_beats /*verilator public_flat_rd*/,
    output logic [63:0] dram_wr_beats /*verilator public_flat_rd*/,
    output logic [63:0] dram_rd_bytes /*verilator public_flat_rd*/,
    output logic [63:0] dram_wr_bytes /*verilator public_flat_rd*/,
    output logic [7:0]  dram_err_flags /*verilator public_flat_rd*/,
    output logic [63:0] cycle /*verilator public_flat_rd*/
