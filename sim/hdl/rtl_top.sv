// rtl_top: the harness of the `rtl` device backend (codenet.sim.rtl_backend).
//
// The generated engine (codenet_engine, hw/gen.py) with its AXI4 master wired to the HDL DRAM
// model (axi_dram.sv), so that a whole network runs with no Python work per cycle. cocotb sees
// only the ports of this module, each marked public (inputs read-write, outputs read-only;
// the runner adds no --public-depth): those of engine_ports.svh, shared with
// tests/hw/tb_engine.sv (the register port, the interrupt, the DRAM model's bulk port and
// counters, a cycle counter), and `bus_stall`.
//
// Simulation speed: Verilator treats every signal VPI may write as an input and evaluates
// the combinational logic downstream of inputs (its `ico` region) at every eval, i.e. at both
// clock edges. With --public-depth 1 this module's internal AXI wires were writable, and the
// engine's `rst` and the `bus_stall` gating reached every next-state function the Amaranth
// netlist computes combinationally. Only the ports public, and `rst` and `bus_stall` entering
// the engine side through a register (both take effect one cycle later), shrink that region
// from about 8,700 lines of C++ to about 1,700, and a frame simulates about 1.6x faster. What
// remains hangs off the AXI4-Lite slave's inputs; register slices there moved it into the
// clocked region instead (about 2 % less work per cycle), not worth their latency. `clk` is
// toggled by the simulator's C++ main loop (sim/hdl/harness_main.cpp), not by cocotb (a VPI
// write and a Python wake-up per edge) nor by an HDL process (Verilator --timing: a coroutine
// per edge) (docs/simulation.md § The rtl backend's speed).
//
// bus_stall = 1 freezes the engine <-> DRAM interconnect: every handshake on the five AXI
// channels is held off (valid towards the receiver and ready towards the sender forced low),
// so nothing is lost and the transfer resumes when it drops. It models a hung interconnect for
// the watchdog and host-timeout paths; the system reset (rst) clears both sides.

`default_nettype none

module rtl_top #(
    parameter int     DATA_WIDTH    = 64,
    parameter int     ADDR_WIDTH    = 32,
    parameter int     ID_WIDTH      = 4,
    /* verilator lint_off WIDTHEXPAND */
    parameter longint MEM_BYTES     = 64'h0100_0000,
    parameter longint BASE_ADDR     = 64'h4000_0000,
    /* verilator lint_on WIDTHEXPAND */
    parameter int     READ_QUEUE    = 16,
    parameter int     WRITE_QUEUE   = 16
) (
    input  wire         bus_stall /*verilator public_flat_rw*/,
`include "engine_ports.svh"
);
    // engine side (m_) and DRAM side (s_) of the interconnect
    logic [ID_WIDTH-1:0]     awid, arid, bid, rid;
    logic [ADDR_WIDTH-1:0]   awaddr, araddr;
    logic [7:0]              awlen, arlen;
    logic [2:0]              awsize, arsize;
    logic [1:0]              awburst, arburst, bresp, rresp;
    logic                    wlast, rlast;
    logic [DATA_WIDTH-1:0]   wdata, rdata;
    logic [DATA_WIDTH/8-1:0] wstrb;
    logic m_awvalid, m_awready, m_wvalid, m_wready, m_bvalid, m_bready, m_arvalid, m_arready, m_rvalid, m_rready;
    logic s_awvalid, s_awready, s_wvalid, s_wready, s_bvalid, s_bready, s_arvalid, s_arready, s_rvalid, s_rready;

    always_ff @(posedge clk) cycle <= rst ? 64'd0 : cycle + 64'd1;

    // registered copies of the asynchronous-to-the-engine inputs (see the header)
    logic engine_rst = 1'b1, stall = 1'b0;
    always_ff @(posedge clk) begin
        engine_rst <= rst;
        stall <= bus_stall;
    end

    wire go = !stall;
    assign s_awvalid = m_awvalid & go;  assign m_awready = s_awready & go;
    assign s_wvalid  = m_wvalid  & go;  assign m_wready  = s_wready  & go;
    assign m_bvalid  = s_bvalid  & go;  assign s_bready  = m_bready  & go;
    assign s_arvalid = m_arvalid & go;  assign m_arready = s_arready & go;
    assign m_rvalid  = s_rvalid  & go;  assign s_rready  = m_rready  & go;

    codenet_engine engine (
        .clk(clk), .rst(engine_rst),
        .s_axil_awaddr(s_axil_awaddr), .s_axil_awprot(s_axil_awprot), .s_axil_awvalid(s_axil_awvalid),
        .s_axil_awready(s_axil_awready), .s_axil_wdata(s_axil_wdata), .s_axil_wstrb(s_axil_wstrb),
        .s_axil_wvalid(s_axil_wvalid), .s_axil_wready(s_axil_wready), .s_axil_bresp(s_axil_bresp),
        .s_axil_bvalid(s_axil_bvalid), .s_axil_bready(s_axil_bready), .s_axil_araddr(s_axil_araddr),
        .s_axil_arprot(s_axil_arprot), .s_axil_arvalid(s_axil_arvalid), .s_axil_arready(s_axil_arready),
        .s_axil_rdata(s_axil_rdata), .s_axil_rresp(s_axil_rresp), .s_axil_rvalid(s_axil_rvalid),
        .s_axil_rready(s_axil_rready),
        .m_axi_awid(awid), .m_axi_awaddr(awaddr), .m_axi_awlen(awlen), .m_axi_awsize(awsize),
        .m_axi_awburst(awburst), .m_axi_awvalid(m_awvalid), .m_axi_awready(m_awready),
        .m_axi_wdata(wdata), .m_axi_wstrb(wstrb), .m_axi_wlast(wlast), .m_axi_wvalid(m_wvalid), .m_axi_wready(m_wready),
        .m_axi_bid(bid), .m_axi_bresp(bresp), .m_axi_bvalid(m_bvalid), .m_axi_bready(m_bready),
        .m_axi_arid(arid), .m_axi_araddr(araddr), .m_axi_arlen(arlen), .m_axi_arsize(arsize),
        .m_axi_arburst(arburst), .m_axi_arvalid(m_arvalid), .m_axi_arready(m_arready),
        .m_axi_rid(rid), .m_axi_rdata(rdata), .m_axi_rresp(rresp), .m_axi_rlast(rlast),
        .m_axi_rvalid(m_rvalid), .m_axi_rready(m_rready),
        .irq(irq)
    );

    // Timing comes from plusargs at start-up (+dram_read_latency=... , codenet.sim.dram.DramTiming),
    // so one build serves every board preset.
    axi_dram #(
        .DATA_WIDTH(DATA_WIDTH), .ADDR_WIDTH(ADDR_WIDTH), .ID_WIDTH(ID_WIDTH), .MEM_BYTES(MEM_BYTES),
        .BASE_ADDR(BASE_ADDR), .READ_QUEUE(READ_QUEUE), .WRITE_QUEUE(WRITE_QUEUE), .NAME("dram"), .VERBOSE(1'b1)
    ) dram (
        .clk(clk), .rst(rst),
        .s_axi_awid(awid), .s_axi_awaddr(awaddr), .s_axi_awlen(awlen), .s_axi_awsize(awsize),
        .s_axi_awburst(awburst), .s_axi_awlock(1'b0), .s_axi_awcache(4'd0), .s_axi_awprot(3'd0), .s_axi_awqos(4'd0),
        .s_axi_awvalid(s_awvalid), .s_axi_awready(s_awready),
        .s_axi_wdata(wdata), .s_axi_wstrb(wstrb), .s_axi_wlast(wlast), .s_axi_wvalid(s_wvalid), .s_axi_wready(s_wready),
        .s_axi_bid(bid), .s_axi_bresp(bresp), .s_axi_bvalid(s_bvalid), .s_axi_bready(s_bready),
        .s_axi_arid(arid), .s_axi_araddr(araddr), .s_axi_arlen(arlen), .s_axi_arsize(arsize),
        .s_axi_arburst(arburst), .s_axi_arlock(1'b0), .s_axi_arcache(4'd0), .s_axi_arprot(3'd0), .s_axi_arqos(4'd0),
        .s_axi_arvalid(s_arvalid), .s_axi_arready(s_arready),
        .s_axi_rid(rid), .s_axi_rdata(rdata), .s_axi_rresp(rresp), .s_axi_rlast(rlast),
        .s_axi_rvalid(s_rvalid), .s_axi_rready(s_rready),
        .load(dram_load), .dump(dram_dump), .dump_first(dram_dump_first), .dump_last(dram_dump_last),
        .rd_beats(dram_rd_beats), .wr_beats(dram_wr_beats), .rd_bytes(dram_rd_bytes), .wr_bytes(dram_wr_bytes),
        .err_flags(dram_err_flags)
    );
endmodule

`default_nettype wire
