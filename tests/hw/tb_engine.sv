// tb_engine: the generated engine (codenet_engine, from `codenet gen`) on the HDL DRAM model.
//
// Why: a whole-engine Verilator run with no Python per cycle on the memory side. The
// engine's AXI4 master drives sim/hdl/axi_dram.sv directly; the register port (s_axil_*),
// the interrupt and the model's bulk port and counters (dram_*) are the top-level ports that
// cocotb sees (sim/hdl/engine_ports.svh, shared with rtl_top.sv, marks them public); the engine
// takes `rst` through a register. Both keep the engine's logic out of Verilator's per-eval
// input region (sim/hdl/rtl_top.sv explains).

`default_nettype none

module tb_engine #(
    parameter int     DATA_WIDTH    = 64,
    parameter int     ADDR_WIDTH    = 32,
    parameter int     ID_WIDTH      = 4,
    /* verilator lint_off WIDTHEXPAND */
    parameter longint MEM_BYTES     = 64'h0010_0000,
    /* verilator lint_on WIDTHEXPAND */
    parameter int     READ_LATENCY  = 40,
    parameter int     WRITE_LATENCY = 20,
    parameter int     BW_NUM        = 0,
    parameter int     BW_DEN        = 1,
    parameter int     READ_QUEUE    = 16,
    parameter int     WRITE_QUEUE   = 16
) (
`include "engine_ports.svh"
);
    logic [ID_WIDTH-1:0]   awid, arid, bid, rid;
    logic [ADDR_WIDTH-1:0] awaddr, araddr;
    logic [7:0]            awlen, arlen;
    logic [2:0]            awsize, arsize;
    logic [1:0]            awburst, arburst, bresp, rresp;
    logic                  awvalid, awready, wlast, wvalid, wready, bvalid, bready;
    logic                  arvalid, arready, rlast, rvalid, rready;
    logic [DATA_WIDTH-1:0] wdata, rdata;
    logic [DATA_WIDTH/8-1:0] wstrb;

    always_ff @(posedge clk) cycle <= rst ? 64'd0 : cycle + 64'd1;

    logic engine_rst = 1'b1;
    always_ff @(posedge clk) engine_rst <= rst;

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
        .m_axi_awburst(awburst), .m_axi_awvalid(awvalid), .m_axi_awready(awready),
        .m_axi_wdata(wdata), .m_axi_wstrb(wstrb), .m_axi_wlast(wlast), .m_axi_wvalid(wvalid), .m_axi_wready(wready),
        .m_axi_bid(bid), .m_axi_bresp(bresp), .m_axi_bvalid(bvalid), .m_axi_bready(bready),
        .m_axi_arid(arid), .m_axi_araddr(araddr), .m_axi_arlen(arlen), .m_axi_arsize(arsize),
        .m_axi_arburst(arburst), .m_axi_arvalid(arvalid), .m_axi_arready(arready),
        .m_axi_rid(rid), .m_axi_rdata(rdata), .m_axi_rresp(rresp), .m_axi_rlast(rlast),
        .m_axi_rvalid(rvalid), .m_axi_rready(rready),
        .irq(irq)
    );

    axi_dram #(
        .DATA_WIDTH(DATA_WIDTH), .ADDR_WIDTH(ADDR_WIDTH), .ID_WIDTH(ID_WIDTH), .MEM_BYTES(MEM_BYTES),
        .READ_LATENCY(READ_LATENCY), .WRITE_LATENCY(WRITE_LATENCY), .BW_NUM(BW_NUM), .BW_DEN(BW_DEN),
        .READ_QUEUE(READ_QUEUE), .WRITE_QUEUE(WRITE_QUEUE), .NAME("dram"), .VERBOSE(1'b1)
    ) dram (
        .clk(clk), .rst(rst),
        .s_axi_awid(awid), .s_axi_awaddr(awaddr), .s_axi_awlen(awlen), .s_axi_awsize(awsize),
        .s_axi_awburst(awburst), .s_axi_awlock(1'b0), .s_axi_awcache(4'd0), .s_axi_awprot(3'd0), .s_axi_awqos(4'd0),
        .s_axi_awvalid(awvalid), .s_axi_awready(awready),
        .s_axi_wdata(wdata), .s_axi_wstrb(wstrb), .s_axi_wlast(wlast), .s_axi_wvalid(wvalid), .s_axi_wready(wready),
        .s_axi_bid(bid), .s_axi_bresp(bresp), .s_axi_bvalid(bvalid), .s_axi_bready(bready),
        .s_axi_arid(arid), .s_axi_araddr(araddr), .s_axi_arlen(arlen), .s_axi_arsize(arsize),
        .s_axi_arburst(arburst), .s_axi_arlock(1'b0), .s_axi_arcache(4'd0), .s_axi_arprot(3'd0), .s_axi_arqos(4'd0),
        .s_axi_arvalid(arvalid), .s_axi_arready(arready),
        .s_axi_rid(rid), .s_axi_rdata(rdata), .s_axi_rresp(rresp), .s_axi_rlast(rlast),
        .s_axi_rvalid(rvalid), .s_axi_rready(rready),
        .load(dram_load), .dump(dram_dump), .dump_first(dram_dump_first), .dump_last(dram_dump_last),
        .rd_beats(dram_rd_beats), .wr_beats(dram_wr_beats), .rd_bytes(dram_rd_bytes), .wr_bytes(dram_wr_bytes),
        .err_flags(dram_err_flags)
    );
endmodule

`default_nettype wire
