// axi_traffic_gen: an AXI4 master that streams bursts at a memory with no Python per cycle.
//
// Why: to measure how fast the simulation runs when the design runs on its own (Python only
// waits for `done`), and to load the DRAM model with sustained, overlapping reads and writes.
//
// After `start`, for `cycles` cycles it issues full-width INCR bursts of `len`+1 beats at
// pseudo-random, burst-aligned addresses base + (lfsr & mask): reads if rd_en, writes if wr_en,
// up to DEPTH of each outstanding. Then it issues nothing new, waits for every response and
// raises `done` (held until the next start). `busy_cycles` counts cycles from start to done.
//
// Data: every beat written, and every beat expected on a read, is the pattern of its word
//   word = byte address >> log2(DATA_WIDTH/8) (32 bits), 32-bit lane k:
//   (word * 32'h9E3779B1) ^ (k * 32'h85EBCA77)
// so reads check themselves when the region was loaded with the same pattern (sim/dram.py,
// `traffic_pattern`); rd_errors counts beats with wrong data, RLAST or RRESP.
// The caller keeps (len+1) * DATA_WIDTH/8 a power of two <= 4096 and base aligned to it,
// so no burst crosses 4 KiB.

`default_nettype none

module axi_traffic_gen #(
    parameter int DATA_WIDTH = 64,
    parameter int ADDR_WIDTH = 32,
    parameter int ID_WIDTH   = 4,
    parameter int DEPTH      = 16
) (
    input  wire                     clk,
    input  wire                     rst,
    input  wire                     start,
    input  wire  [31:0]             cycles,
    input  wire  [7:0]              len,
    input  wire  [ADDR_WIDTH-1:0]   base,
    input  wire  [ADDR_WIDTH-1:0]   mask,
    input  wire                     rd_en,
    input  wire                     wr_en,
    output logic                    done,
    output logic [63:0]             rd_beat_count,
    output logic [63:0]             wr_beat_count,
    output logic [63:0]             rd_errors,
    output logic [63:0]             busy_cycles,

    output logic [ID_WIDTH-1:0]     m_axi_awid,
    output logic [ADDR_WIDTH-1:0]   m_axi_awaddr,
    output logic [7:0]              m_axi_awlen,
    output logic [2:0]              m_axi_awsize,
    output logic [1:0]              m_axi_awburst,
    output logic                    m_axi_awvalid,
    input  wire                     m_axi_awready,
    output logic [DATA_WIDTH-1:0]   m_axi_wdata,
    output logic [DATA_WIDTH/8-1:0] m_axi_wstrb,
    output logic                    m_axi_wlast,
    output logic                    m_axi_wvalid,
    input  wire                     m_axi_wready,
    input  wire  [ID_WIDTH-1:0]     m_axi_bid,
    input  wire  [1:0]              m_axi_bresp,
    input  wire                     m_axi_bvalid,
    output logic                    m_axi_bready,
    output logic [ID_WIDTH-1:0]     m_axi_arid,
    output logic [ADDR_WIDTH-1:0]   m_axi_araddr,
    output logic [7:0]              m_axi_arlen,
    output logic [2:0]              m_axi_arsize,
    output logic [1:0]              m_axi_arburst,
    output logic                    m_axi_arvalid,
    input  wire                     m_axi_arready,
    input  wire  [ID_WIDTH-1:0]     m_axi_rid,
    input  wire  [DATA_WIDTH-1:0]   m_axi_rdata,
    input  wire  [1:0]              m_axi_rresp,
    input  wire                     m_axi_rlast,
    input  wire                     m_axi_rvalid,
    output logic                    m_axi_rready
);
    localparam int STRB = DATA_WIDTH / 8;
    localparam int LANE_BITS = $clog2(STRB);
    localparam int LANES = DATA_WIDTH / 32;
    localparam int DB = $clog2(DEPTH);
    localparam int AW = ADDR_WIDTH;

    function automatic logic [DATA_WIDTH-1:0] pattern(input logic [AW-1:0] addr);
        logic [31:0] word;
        word = 32'(addr >> LANE_BITS);
        for (int k = 0; k < LANES; k++) pattern[k*32 +: 32] = (word * 32'h9E3779B1) ^ (32'(k) * 32'h85EBCA77);
    endfunction

    function automatic logic [31:0] xorshift(input logic [31:0] x);
        logic [31:0] y;
        y = x ^ (x << 13);
        y = y ^ (y >> 17);
        xorshift = y ^ (y << 5);
    endfunction

    logic running, started;
    logic [31:0] left;
    logic [31:0] lfsr_r, lfsr_w;
    logic [AW-1:0] burst_mask;

    // outstanding read bursts (start addresses) and write bursts still to send data for
    logic [AW-1:0] rq [DEPTH];
    logic [AW-1:0] wq [DEPTH];
    logic [DB-1:0] rq_head, rq_tail, wq_head, wq_tail;
    logic [DB:0]   rq_count, wq_count;
    logic [7:0]    r_beat, w_beat;
    logic [31:0]   b_wait;  // write bursts issued whose B has not come back

    logic ar_fire, aw_fire, r_fire, w_fire, b_fire;

    always_comb begin
        burst_mask = ((AW'(len) + AW'(1)) << LANE_BITS) - AW'(1);
        m_axi_arid = '0;
        m_axi_awid = '0;
        m_axi_arlen = len;
        m_axi_awlen = len;
        m_axi_arsize = 3'(LANE_BITS);
        m_axi_awsize = 3'(LANE_BITS);
        m_axi_arburst = 2'd1;
        m_axi_awburst = 2'd1;
        m_axi_araddr = base + ((AW'(lfsr_r) & mask) & ~burst_mask);
        m_axi_awaddr = base + ((AW'(lfsr_w) & mask) & ~burst_mask);
        m_axi_arvalid = running && rd_en && rq_count != (DB + 1)'(DEPTH);
        m_axi_awvalid = running && wr_en && wq_count != (DB + 1)'(DEPTH);
        m_axi_rready = 1'b1;
        m_axi_bready = 1'b1;
        m_axi_wvalid = wq_count != '0;
        m_axi_wdata = pattern(wq[wq_head] + (AW'(w_beat) << LANE_BITS));
        m_axi_wstrb = '1;
        m_axi_wlast = w_beat == len;
    end

    always_comb begin  // apart from the block above: valid must not look as if it depended on ready
        ar_fire = m_axi_arvalid && m_axi_arready;
        aw_fire = m_axi_awvalid && m_axi_awready;
        r_fire = m_axi_rvalid && m_axi_rready;
        w_fire = m_axi_wvalid && m_axi_wready;
        b_fire = m_axi_bvalid && m_axi_bready;
    end

    always_ff @(posedge clk) begin
        if (rst) begin
            running <= 1'b0;
            started <= 1'b0;
            done <= 1'b0;
            lfsr_r <= 32'h1234_5679;
            lfsr_w <= 32'h8765_4321;
            rq_head <= '0; rq_tail <= '0; rq_count <= '0;
            wq_head <= '0; wq_tail <= '0; wq_count <= '0;
            r_beat <= '0; w_beat <= '0; b_wait <= '0;
            rd_beat_count <= '0; wr_beat_count <= '0; rd_errors <= '0; busy_cycles <= '0;
        end else begin
            if (start) begin
                running <= cycles != 0;
                started <= 1'b1;
                done <= 1'b0;
                left <= cycles;
                rd_beat_count <= '0; wr_beat_count <= '0; rd_errors <= '0; busy_cycles <= '0;
            end else begin
                if (running) begin
                    left <= left - 32'd1;
                    if (left == 32'd1) running <= 1'b0;
                end
                if (started && !done) busy_cycles <= busy_cycles + 64'd1;
                if (started && !running && rq_count == '0 && wq_count == '0 && b_wait == '0) done <= 1'b1;
            end

            if (ar_fire) begin
                rq[rq_tail] <= m_axi_araddr;
                rq_tail <= rq_tail + 1'b1;
                lfsr_r <= xorshift(lfsr_r);
            end
            if (r_fire) begin
                rd_beat_count <= rd_beat_count + 64'd1;
                if (m_axi_rdata != pattern(rq[rq_head] + (AW'(r_beat) << LANE_BITS))
                    || m_axi_rlast != (r_beat == len) || m_axi_rresp != 2'd0)
                    rd_errors <= rd_errors + 64'd1;
                if (r_beat == len) begin
                    r_beat <= '0;
                    rq_head <= rq_head + 1'b1;
                end else begin
                    r_beat <= r_beat + 8'd1;
                end
            end
            rq_count <= rq_count + (DB + 1)'(ar_fire) - (DB + 1)'(r_fire && r_beat == len);

            if (aw_fire) begin
                wq[wq_tail] <= m_axi_awaddr;
                wq_tail <= wq_tail + 1'b1;
                lfsr_w <= xorshift(lfsr_w);
            end
            if (w_fire) begin
                wr_beat_count <= wr_beat_count + 64'd1;
                if (w_beat == len) begin
                    w_beat <= '0;
                    wq_head <= wq_head + 1'b1;
                end else begin
                    w_beat <= w_beat + 8'd1;
                end
            end
            wq_count <= wq_count + (DB + 1)'(aw_fire) - (DB + 1)'(w_fire && w_beat == len);
            b_wait <= b_wait + 32'(aw_fire) - 32'(b_fire);
        end
    end
endmodule

`default_nettype wire
