// tb_axi_dram: test harness top for the DRAM model.
//
// Why: exposes one AXI4 slave port of axi_dram at the top level, so that an independent
// protocol model (cocotbext-axi's AxiMaster, driving s_axi_*) can exercise it, plus the
// model's bulk-load/dump strobes and counters (dram_*). With tg_enable high the port is
// instead driven by the HDL traffic generator (tg_*), for runs with no Python per cycle;
// the external port then reads as idle (all ready/valid outputs low).
// Only top-level signals are visible to cocotb (the runner builds with --public-depth 1).

`default_nettype none

module tb_axi_dram #(
    parameter int     DATA_WIDTH    = 64,
    parameter int     ADDR_WIDTH    = 32,
    parameter int     ID_WIDTH      = 4,
    // -GMEM_BYTES=<decimal> arrives as a 32-bit constant: widening it is intended
    /* verilator lint_off WIDTHEXPAND */
    parameter longint MEM_BYTES     = 64'h0010_0000,
    parameter longint BASE_ADDR     = 64'h0,
    /* verilator lint_on WIDTHEXPAND */
    parameter int     READ_LATENCY  = 40,
    parameter int     WRITE_LATENCY = 20,
    parameter int     BW_NUM        = 0,
    parameter int     BW_DEN        = 1,
    parameter int     BUCKET_BYTES  = 0,
    parameter int     READ_QUEUE    = 8,
    parameter int     WRITE_QUEUE   = 8
) (
    input  wire                     clk,
    input  wire                     rst,

    input  wire  [ID_WIDTH-1:0]     s_axi_awid,
    input  wire  [ADDR_WIDTH-1:0]   s_axi_awaddr,
    input  wire  [7:0]              s_axi_awlen,
    input  wire  [2:0]              s_axi_awsize,
    input  wire  [1:0]              s_axi_awburst,
    input  wire                     s_axi_awlock,
    input  wire  [3:0]              s_axi_awcache,
    input  wire  [2:0]              s_axi_awprot,
    input  wire  [3:0]              s_axi_awqos,
    input  wire                     s_axi_awvalid,
    output logic                    s_axi_awready,
    input  wire  [DATA_WIDTH-1:0]   s_axi_wdata,
    input  wire  [DATA_WIDTH/8-1:0] s_axi_wstrb,
    input  wire                     s_axi_wlast,
    input  wire                     s_axi_wvalid,
    output logic                    s_axi_wready,
    output logic [ID_WIDTH-1:0]     s_axi_bid,
    output logic [1:0]              s_axi_bresp,
    output logic                    s_axi_bvalid,
    input  wire                     s_axi_bready,
    input  wire  [ID_WIDTH-1:0]     s_axi_arid,
    input  wire  [ADDR_WIDTH-1:0]   s_axi_araddr,
    input  wire  [7:0]              s_axi_arlen,
    input  wire  [2:0]              s_axi_arsize,
    input  wire  [1:0]              s_axi_arburst,
    input  wire                     s_axi_arlock,
    input  wire  [3:0]              s_axi_arcache,
    input  wire  [2:0]              s_axi_arprot,
    input  wire  [3:0]              s_axi_arqos,
    input  wire                     s_axi_arvalid,
    output logic                    s_axi_arready,
    output logic [ID_WIDTH-1:0]     s_axi_rid,
    output logic [DATA_WIDTH-1:0]   s_axi_rdata,
    output logic [1:0]              s_axi_rresp,
    output logic                    s_axi_rlast,
    output logic                    s_axi_rvalid,
    input  wire                     s_axi_rready,

    input  wire                     dram_load,
    input  wire                     dram_dump,
    input  wire  [31:0]             dram_dump_first,
    input  wire  [31:0]             dram_dump_last,
    output logic [63:0]             dram_rd_beats,
    output logic [63:0]             dram_wr_beats,
    output logic [63:0]             dram_rd_bytes,
    output logic [63:0]             dram_wr_bytes,
    output logic [7:0]              dram_err_flags,

    input  wire                     tg_enable,
    input  wire                     tg_start,
    input  wire  [31:0]             tg_cycles,
    input  wire  [7:0]              tg_len,
    input  wire  [ADDR_WIDTH-1:0]   tg_base,
    input  wire  [ADDR_WIDTH-1:0]   tg_mask,
    input  wire                     tg_rd_en,
    input  wire                     tg_wr_en,
    output logic                    tg_done,
    output logic [63:0]             tg_rd_beats,
    output logic [63:0]             tg_wr_beats,
    output logic [63:0]             tg_rd_errors,
    output logic [63:0]             tg_busy_cycles
);
    localparam int STRB = DATA_WIDTH / 8;

    // the port as the DRAM sees it
    logic [ID_WIDTH-1:0]   awid, arid, bid, rid;
    logic [ADDR_WIDTH-1:0] awaddr, araddr;
    logic [7:0]            awlen, arlen;
    logic [2:0]            awsize, arsize;
    logic [1:0]            awburst, arburst, bresp, rresp;
    logic                  awvalid, awready, wlast, wvalid, wready, bvalid, bready;
    logic                  arvalid, arready, rlast, rvalid, rready;
    logic [DATA_WIDTH-1:0] wdata, rdata;
    logic [STRB-1:0]       wstrb;

    // the traffic generator's port
    logic [ID_WIDTH-1:0]   g_awid, g_arid;
    logic [ADDR_WIDTH-1:0] g_awaddr, g_araddr;
    logic [7:0]            g_awlen, g_arlen;
    logic [2:0]            g_awsize, g_arsize;
    logic [1:0]            g_awburst, g_arburst;
    logic                  g_awvalid, g_wlast, g_wvalid, g_bready, g_arvalid, g_rready;
    logic [DATA_WIDTH-1:0] g_wdata;
    logic [STRB-1:0]       g_wstrb;

    // separate assigns, not one always_comb: one block would look like a combinational loop to Verilator
    assign awid    = tg_enable ? g_awid    : s_axi_awid;
    assign awaddr  = tg_enable ? g_awaddr  : s_axi_awaddr;
    assign awlen   = tg_enable ? g_awlen   : s_axi_awlen;
    assign awsize  = tg_enable ? g_awsize  : s_axi_awsize;
    assign awburst = tg_enable ? g_awburst : s_axi_awburst;
    assign awvalid = tg_enable ? g_awvalid : s_axi_awvalid;
    assign wdata   = tg_enable ? g_wdata   : s_axi_wdata;
    assign wstrb   = tg_enable ? g_wstrb   : s_axi_wstrb;
    assign wlast   = tg_enable ? g_wlast   : s_axi_wlast;
    assign wvalid  = tg_enable ? g_wvalid  : s_axi_wvalid;
    assign bready  = tg_enable ? g_bready  : s_axi_bready;
    assign arid    = tg_enable ? g_arid    : s_axi_arid;
    assign araddr  = tg_enable ? g_araddr  : s_axi_araddr;
    assign arlen   = tg_enable ? g_arlen   : s_axi_arlen;
    assign arsize  = tg_enable ? g_arsize  : s_axi_arsize;
    assign arburst = tg_enable ? g_arburst : s_axi_arburst;
    assign arvalid = tg_enable ? g_arvalid : s_axi_arvalid;
    assign rready  = tg_enable ? g_rready  : s_axi_rready;
    assign s_axi_awready = awready && !tg_enable;
    assign s_axi_wready  = wready && !tg_enable;
    assign s_axi_bid     = bid;
    assign s_axi_bresp   = bresp;
    assign s_axi_bvalid  = bvalid && !tg_enable;
    assign s_axi_arready = arready && !tg_enable;
    assign s_axi_rid     = rid;
    assign s_axi_rdata   = rdata;
    assign s_axi_rresp   = rresp;
    assign s_axi_rlast   = rlast;
    assign s_axi_rvalid  = rvalid && !tg_enable;

    axi_dram #(
        .DATA_WIDTH(DATA_WIDTH), .ADDR_WIDTH(ADDR_WIDTH), .ID_WIDTH(ID_WIDTH),
        .MEM_BYTES(MEM_BYTES), .BASE_ADDR(BASE_ADDR),
        .READ_LATENCY(READ_LATENCY), .WRITE_LATENCY(WRITE_LATENCY),
        .BW_NUM(BW_NUM), .BW_DEN(BW_DEN), .BUCKET_BYTES(BUCKET_BYTES),
        .READ_QUEUE(READ_QUEUE), .WRITE_QUEUE(WRITE_QUEUE), .NAME("dram")
    ) dram (
        .clk(clk), .rst(rst),
        .s_axi_awid(awid), .s_axi_awaddr(awaddr), .s_axi_awlen(awlen), .s_axi_awsize(awsize),
        .s_axi_awburst(awburst), .s_axi_awlock(s_axi_awlock), .s_axi_awcache(s_axi_awcache),
        .s_axi_awprot(s_axi_awprot), .s_axi_awqos(s_axi_awqos),
        .s_axi_awvalid(awvalid), .s_axi_awready(awready),
        .s_axi_wdata(wdata), .s_axi_wstrb(wstrb), .s_axi_wlast(wlast), .s_axi_wvalid(wvalid), .s_axi_wready(wready),
        .s_axi_bid(bid), .s_axi_bresp(bresp), .s_axi_bvalid(bvalid), .s_axi_bready(bready),
        .s_axi_arid(arid), .s_axi_araddr(araddr), .s_axi_arlen(arlen), .s_axi_arsize(arsize),
        .s_axi_arburst(arburst), .s_axi_arlock(s_axi_arlock), .s_axi_arcache(s_axi_arcache),
        .s_axi_arprot(s_axi_arprot), .s_axi_arqos(s_axi_arqos),
        .s_axi_arvalid(arvalid), .s_axi_arready(arready),
        .s_axi_rid(rid), .s_axi_rdata(rdata), .s_axi_rresp(rresp), .s_axi_rlast(rlast),
        .s_axi_rvalid(rvalid), .s_axi_rready(rready),
        .load(dram_load), .dump(dram_dump), .dump_first(dram_dump_first), .dump_last(dram_dump_last),
        .rd_beats(dram_rd_beats), .wr_beats(dram_wr_beats), .rd_bytes(dram_rd_bytes), .wr_bytes(dram_wr_bytes),
        .err_flags(dram_err_flags)
    );

    axi_traffic_gen #(.DATA_WIDTH(DATA_WIDTH), .ADDR_WIDTH(ADDR_WIDTH), .ID_WIDTH(ID_WIDTH)) tg (
        .clk(clk), .rst(rst), .start(tg_start), .cycles(tg_cycles), .len(tg_len), .base(tg_base), .mask(tg_mask),
        .rd_en(tg_rd_en), .wr_en(tg_wr_en), .done(tg_done),
        .rd_beat_count(tg_rd_beats), .wr_beat_count(tg_wr_beats), .rd_errors(tg_rd_errors), .busy_cycles(tg_busy_cycles),
        .m_axi_awid(g_awid), .m_axi_awaddr(g_awaddr), .m_axi_awlen(g_awlen), .m_axi_awsize(g_awsize),
        .m_axi_awburst(g_awburst), .m_axi_awvalid(g_awvalid), .m_axi_awready(awready && tg_enable),
        .m_axi_wdata(g_wdata), .m_axi_wstrb(g_wstrb), .m_axi_wlast(g_wlast), .m_axi_wvalid(g_wvalid),
        .m_axi_wready(wready && tg_enable),
        .m_axi_bid(bid), .m_axi_bresp(bresp), .m_axi_bvalid(bvalid && tg_enable), .m_axi_bready(g_bready),
        .m_axi_arid(g_arid), .m_axi_araddr(g_araddr), .m_axi_arlen(g_arlen), .m_axi_arsize(g_arsize),
        .m_axi_arburst(g_arburst), .m_axi_arvalid(g_arvalid), .m_axi_arready(arready && tg_enable),
        .m_axi_rid(rid), .m_axi_rdata(rdata), .m_axi_rresp(rresp), .m_axi_rlast(rlast),
        .m_axi_rvalid(rvalid && tg_enable), .m_axi_rready(g_rready)
    );
endmodule

`default_nettype wire
