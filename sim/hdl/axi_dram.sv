// axi_dram: simulation-only AXI4 slave memory ("DRAM") for Verilator.
//
// Why: a whole network runs for millions of cycles; a memory model written in Python costs
// Python work every cycle and caps the simulation near 80 k cycles/s. This model lives in the
// HDL, so the simulator runs at full speed, and it is slow where a board is slow: a fixed
// first-beat latency and a shared read/write bandwidth budget (token bucket), so that cycle
// counts mean something. Bulk contents move through files ($readmemh / $writememh) on a strobe,
// with no per-cycle Python either. See docs/simulation.md.
//
// Protocol: AXI4 INCR, FIXED and WRAP bursts of 1..256 beats, narrow sizes, byte strobes,
// several reads and several writes outstanding (READ_QUEUE / WRITE_QUEUE), answered in order
// whatever their IDs (legal AXI). Reads and writes proceed independently. Masters must not cross
// a 4 KiB boundary; the model flags it (err_flags) and still performs the burst linearly.
//
// Timing (all in clk cycles, with the master always ready and no bandwidth stall):
//   READ_LATENCY  = edges from the AR handshake to the first R handshake (>= 3);
//   WRITE_LATENCY = edges from the last W handshake (WLAST) to the B handshake (>= 2).
//   Bandwidth: every beat costs 2**AxSIZE bytes; the budget grows by BW_NUM/BW_DEN bytes per
//   cycle (BW_NUM = 0: no limit but one beat per cycle and channel), shared by reads and writes,
//   and holds at most BUCKET_BYTES (+ one cycle's worth). Board rule of thumb:
//   BW_NUM = transfers per us * bytes per transfer, BW_DEN = clock in MHz.
//   Each timing parameter can be overridden at run time by a plusarg, without a rebuild:
//   +<NAME>_read_latency=N +<NAME>_write_latency=N +<NAME>_bw_num=N +<NAME>_bw_den=N
//   +<NAME>_bucket_bytes=N
//
// Bulk access (no Python per cycle):
//   load  (strobe, sampled at posedge): $readmemh(<NAME>_load file) into the memory. The file may
//         hold "@<word index>" lines, so it can place any number of regions and leaves every
//         other word untouched. File: +<NAME>_load=<path>, default "<NAME>_load.hex" in the cwd.
//   dump  (strobe): $writememh(<NAME>_dump file, words dump_first..dump_last).
//         File: +<NAME>_dump=<path>, default "<NAME>_dump.hex".
//   At time 0 the memory is zero, then loaded from +<NAME>_init=<path> if given, else from the
//   INIT_FILE parameter if not empty.
//   One word of the memory is DATA_WIDTH bits; word i holds bytes [BASE_ADDR + i*DATA_WIDTH/8, ...),
//   byte 0 in the least significant bits (AXI little-endian byte lanes).
//
// Counters (reset by rst): rd_beats / wr_beats (beats transferred), rd_bytes (bytes in the active
// byte lanes of each read beat), wr_bytes (strobed bytes written).
// err_flags (sticky until rst; with VERBOSE each is also printed once when first raised):
//   [0] read burst crosses 4 KiB      [1] write burst crosses 4 KiB
//   [2] AxSIZE wider than the bus     [3] reserved burst type, bad WRAP length/alignment, FIXED > 16
//   [4] WLAST does not match AWLEN    [5] read outside the memory (answered DECERR, data 0)
//   [6] write outside the memory (dropped, DECERR)   [7] write strobe outside the beat's byte lanes

`default_nettype none

module axi_dram #(
    parameter int     DATA_WIDTH    = 64,
    parameter int     ADDR_WIDTH    = 32,
    parameter int     ID_WIDTH      = 4,
    // -GMEM_BYTES=<decimal> arrives as a 32-bit constant: widening it is intended
    /* verilator lint_off WIDTHEXPAND */
    parameter longint MEM_BYTES     = 64'h0100_0000,
    parameter longint BASE_ADDR     = 64'h0,
    /* verilator lint_on WIDTHEXPAND */
    parameter int     READ_LATENCY  = 40,
    parameter int     WRITE_LATENCY = 20,
    parameter int     BW_NUM        = 0,
    parameter int     BW_DEN        = 1,
    parameter int     BUCKET_BYTES  = 0,
    parameter int     READ_QUEUE    = 8,
    parameter int     WRITE_QUEUE   = 8,
    parameter string  NAME          = "dram",
    parameter string  INIT_FILE     = "",
    parameter bit     VERBOSE       = 1'b1
) (
    input  wire                      clk,
    input  wire                      rst,

    input  wire  [ID_WIDTH-1:0]      s_axi_awid,
    input  wire  [ADDR_WIDTH-1:0]    s_axi_awaddr,
    input  wire  [7:0]               s_axi_awlen,
    input  wire  [2:0]               s_axi_awsize,
    input  wire  [1:0]               s_axi_awburst,
    input  wire                      s_axi_awlock,
    input  wire  [3:0]               s_axi_awcache,
    input  wire  [2:0]               s_axi_awprot,
    input  wire  [3:0]               s_axi_awqos,
    input  wire                      s_axi_awvalid,
    output logic                     s_axi_awready,

    input  wire  [DATA_WIDTH-1:0]    s_axi_wdata,
    input  wire  [DATA_WIDTH/8-1:0]  s_axi_wstrb,
    input  wire                      s_axi_wlast,
    input  wire                      s_axi_wvalid,
    output logic                     s_axi_wready,

    output logic [ID_WIDTH-1:0]      s_axi_bid,
    output logic [1:0]               s_axi_bresp,
    output logic                     s_axi_bvalid,
    input  wire                      s_axi_bready,

    input  wire  [ID_WIDTH-1:0]      s_axi_arid,
    input  wire  [ADDR_WIDTH-1:0]    s_axi_araddr,
    input  wire  [7:0]               s_axi_arlen,
    input  wire  [2:0]               s_axi_arsize,
    input  wire  [1:0]               s_axi_arburst,
    input  wire                      s_axi_arlock,
    input  wire  [3:0]               s_axi_arcache,
    input  wire  [2:0]               s_axi_arprot,
    input  wire  [3:0]               s_axi_arqos,
    input  wire                      s_axi_arvalid,
    output logic                     s_axi_arready,

    output logic [ID_WIDTH-1:0]      s_axi_rid,
    output logic [DATA_WIDTH-1:0]    s_axi_rdata,
    output logic [1:0]               s_axi_rresp,
    output logic                     s_axi_rlast,
    output logic                     s_axi_rvalid,
    input  wire                      s_axi_rready,

    input  wire                      load,
    input  wire                      dump,
    input  wire  [31:0]              dump_first,
    input  wire  [31:0]              dump_last,

    output logic [63:0]              rd_beats,
    output logic [63:0]              wr_beats,
    output logic [63:0]              rd_bytes,
    output logic [63:0]              wr_bytes,
    output logic [7:0]               err_flags
);
    localparam int STRB = DATA_WIDTH / 8;
    localparam int LANE_BITS = $clog2(STRB);
    localparam longint WORDS = MEM_BYTES / longint'(STRB);
    localparam int WI_BITS = WORDS > 1 ? $clog2(WORDS) : 1;
    localparam int RQ_BITS = $clog2(READ_QUEUE);
    localparam int WQ_BITS = $clog2(WRITE_QUEUE);
    localparam logic [1:0] FIXED = 2'd0, INCR = 2'd1, WRAP = 2'd2;
    localparam logic [1:0] OKAY = 2'd0, DECERR = 2'd3;
    localparam int AW = ADDR_WIDTH;

    // Elaboration checks: a wrong configuration stops the build, not the test an hour later.
    if (DATA_WIDTH < 32 || DATA_WIDTH > 1024 || (DATA_WIDTH & (DATA_WIDTH - 1)) != 0)
        $error("axi_dram: DATA_WIDTH must be a power of two in 32..1024");
    if (MEM_BYTES % longint'(STRB) != 0 || MEM_BYTES <= 0) $error("axi_dram: MEM_BYTES must be a positive multiple of DATA_WIDTH/8");
    if (READ_QUEUE < 2 || (READ_QUEUE & (READ_QUEUE - 1)) != 0) $error("axi_dram: READ_QUEUE must be a power of two >= 2");
    if (WRITE_QUEUE < 2 || (WRITE_QUEUE & (WRITE_QUEUE - 1)) != 0) $error("axi_dram: WRITE_QUEUE must be a power of two >= 2");
    if (ADDR_WIDTH < 13 || ADDR_WIDTH > 64) $error("axi_dram: ADDR_WIDTH must be in 13..64");

    logic [DATA_WIDTH-1:0] mem [WORDS];

    // ---------------------------------------------------------------- run-time settings
    int unsigned rd_lat, wr_lat, bw_num, bw_den, bucket_bytes;
    string load_file, dump_file, init_file;

    initial begin
        rd_lat = READ_LATENCY;
        wr_lat = WRITE_LATENCY;
        bw_num = BW_NUM;
        bw_den = BW_DEN;
        bucket_bytes = BUCKET_BYTES;
        load_file = {NAME, "_load.hex"};
        dump_file = {NAME, "_dump.hex"};
        init_file = INIT_FILE;
        void'($value$plusargs({NAME, "_read_latency=%d"}, rd_lat));
        void'($value$plusargs({NAME, "_write_latency=%d"}, wr_lat));
        void'($value$plusargs({NAME, "_bw_num=%d"}, bw_num));
        void'($value$plusargs({NAME, "_bw_den=%d"}, bw_den));
        void'($value$plusargs({NAME, "_bucket_bytes=%d"}, bucket_bytes));
        void'($value$plusargs({NAME, "_load=%s"}, load_file));
        void'($value$plusargs({NAME, "_dump=%s"}, dump_file));
        void'($value$plusargs({NAME, "_init=%s"}, init_file));
        if (rd_lat < 3) begin
            $display("axi_dram %s: read latency %0d raised to the minimum, 3", NAME, rd_lat);
            rd_lat = 3;
        end
        if (wr_lat < 2) begin
            $display("axi_dram %s: write latency %0d raised to the minimum, 2", NAME, wr_lat);
            wr_lat = 2;
        end
        if (bw_den == 0) bw_den = 1;
        if (bucket_bytes < 2 * STRB) bucket_bytes = 2 * STRB;
        for (longint i = 0; i < WORDS; i++) mem[WI_BITS'(i)] = '0;
        if (init_file != "") $readmemh(init_file, mem);
        if (VERBOSE)
            $display("axi_dram %s: %0d-bit, %0d KiB at 0x%0h, read latency %0d, write latency %0d, bandwidth %0d/%0d B/cycle%s",
                     NAME, DATA_WIDTH, MEM_BYTES / 1024, BASE_ADDR, rd_lat, wr_lat, bw_num, bw_den,
                     bw_num == 0 ? " (unlimited)" : "");
    end

    // ---------------------------------------------------------------- helpers
    function automatic logic [AW-1:0] next_addr(input logic [AW-1:0] a, input logic [2:0] size,
                                                input logic [1:0] burst, input logic [AW-1:0] wrap_mask);
        logic [AW-1:0] step, aligned;
        step = AW'(1) << size;
        aligned = a & ~(step - AW'(1));
        case (burst)
            FIXED: next_addr = a;
            WRAP: next_addr = (a & ~wrap_mask) | ((aligned + step) & wrap_mask);
            default: next_addr = aligned + step;
        endcase
    endfunction

    // Bytes in the active lanes of a beat at address a: the first beat of an unaligned burst is short.
    function automatic logic [LANE_BITS+1:0] beat_bytes(input logic [AW-1:0] a, input logic [2:0] size);
        logic [AW-1:0] step;
        step = AW'(1) << size;
        beat_bytes = (LANE_BITS + 2)'(step - (a & (step - AW'(1))));
    endfunction

    // Byte-lane mask of a beat: lanes [a mod STRB, aligned(a) + 2**size) within the bus word.
    function automatic logic [STRB-1:0] lane_mask(input logic [AW-1:0] a, input logic [2:0] size);
        logic [AW-1:0] step, lo, hi;
        step = AW'(1) << size;
        lo = a & AW'(STRB - 1);
        hi = (a & ~(step - AW'(1)) & AW'(STRB - 1)) + step;
        for (int i = 0; i < STRB; i++) lane_mask[i] = (AW'(i) >= lo) && (AW'(i) < hi);
    endfunction

    // Flags raised by a request as it is accepted: 4 KiB crossing, size, burst type.
    function automatic logic [2:0] check_request(input logic [AW-1:0] a, input logic [7:0] len,
                                                 input logic [2:0] size, input logic [1:0] burst);
        logic [AW:0] first, last;
        logic [AW-1:0] step;
        step = AW'(1) << size;
        first = {1'b0, a & ~(step - AW'(1))};
        last = first + ((AW + 1)'(len) + 1) * (AW + 1)'(step) - 1;
        check_request[0] = burst == INCR && first[AW:12] != last[AW:12];
        check_request[1] = 32'(size) > LANE_BITS;
        check_request[2] = burst == 2'd3
                        || (burst == WRAP && !(len == 8'd1 || len == 8'd3 || len == 8'd7 || len == 8'd15))
                        || (burst == WRAP && (a & (step - AW'(1))) != '0)
                        || (burst == FIXED && len > 8'd15);
    endfunction

    function automatic logic [AW-1:0] wrap_mask_of(input logic [7:0] len, input logic [2:0] size);
        wrap_mask_of = ((AW'(len) + AW'(1)) << size) - AW'(1);
    endfunction

    // An address below BASE_ADDR wraps to a huge offset, so one comparison covers both ends.
    function automatic logic in_range(input logic [AW-1:0] a);
        in_range = 64'(a) - 64'(BASE_ADDR) < 64'(MEM_BYTES);
    endfunction

    function automatic logic [WI_BITS-1:0] word_index(input logic [AW-1:0] a);
        word_index = WI_BITS'((64'(a) - 64'(BASE_ADDR)) >> LANE_BITS);
    endfunction

    // ---------------------------------------------------------------- cycle count, bandwidth budget
    logic [31:0] cyc;
    logic [47:0] tokens, cap, cost_r, cost_w;
    logic unlimited;
    logic prio_w;

    function automatic logic due(input logic [31:0] when);
        logic [31:0] diff;
        diff = cyc - when;
        due = !diff[31];
    endfunction

    // ---------------------------------------------------------------- read side
    logic [ID_WIDTH-1:0] arq_id    [READ_QUEUE];
    logic [AW-1:0]       arq_addr  [READ_QUEUE];
    logic [7:0]          arq_len   [READ_QUEUE];
    logic [2:0]          arq_size  [READ_QUEUE];
    logic [1:0]          arq_burst [READ_QUEUE];
    logic [31:0]         arq_due   [READ_QUEUE];
    logic [RQ_BITS-1:0]  arq_head, arq_tail;
    logic [RQ_BITS:0]    arq_count;

    logic                r_act;
    logic [ID_WIDTH-1:0] r_id;
    logic [AW-1:0]       r_addr, r_wrap;
    logic [8:0]          r_left;
    logic [2:0]          r_size;
    logic [1:0]          r_burst;
    logic [31:0]         r_due;

    // ---------------------------------------------------------------- write side
    logic [ID_WIDTH-1:0] awq_id    [WRITE_QUEUE];
    logic [AW-1:0]       awq_addr  [WRITE_QUEUE];
    logic [7:0]          awq_len   [WRITE_QUEUE];
    logic [2:0]          awq_size  [WRITE_QUEUE];
    logic [1:0]          awq_burst [WRITE_QUEUE];
    logic [WQ_BITS-1:0]  awq_head, awq_tail;
    logic [WQ_BITS:0]    awq_count;

    logic                w_act;
    logic [ID_WIDTH-1:0] w_id;
    logic [AW-1:0]       w_addr, w_wrap;
    logic [8:0]          w_left;
    logic [2:0]          w_size;
    logic [1:0]          w_burst;
    logic                w_err;

    logic [ID_WIDTH-1:0] bq_id   [WRITE_QUEUE];
    logic [1:0]          bq_resp [WRITE_QUEUE];
    logic [31:0]         bq_due  [WRITE_QUEUE];
    logic [WQ_BITS-1:0]  bq_head, bq_tail;
    logic [WQ_BITS:0]    bq_count;

    // ---------------------------------------------------------------- decisions of this cycle
    logic r_pend, w_pend, ok_r, ok_w, both_ok, grant_r, grant_w, r_fire, w_fire, ar_fire, aw_fire;
    logic ar_pop, aw_pop, b_push, b_pop;
    logic [STRB-1:0] w_lanes;
    logic [DATA_WIDTH-1:0] w_mask;

    always_comb begin
        unlimited = bw_num == 0;
        cap = 48'(bw_den) * 48'(bucket_bytes) + 48'(bw_num);
        cost_r = 48'(bw_den) << r_size;
        cost_w = 48'(bw_den) << w_size;
        ok_r = unlimited || tokens >= cost_r;
        ok_w = unlimited || tokens >= cost_w;
        both_ok = unlimited || tokens >= cost_r + cost_w;
        r_pend = r_act && due(r_due);
        grant_w = ok_w && (both_ok || !r_pend || prio_w);
        s_axi_arready = !rst && arq_count != (RQ_BITS + 1)'(READ_QUEUE);
        s_axi_awready = !rst && awq_count != (WQ_BITS + 1)'(WRITE_QUEUE);
        s_axi_wready = !rst && w_act && grant_w && bq_count != (WQ_BITS + 1)'(WRITE_QUEUE);
        w_lanes = lane_mask(w_addr, w_size);
    end

    // Kept apart from the block above, which computes the ready outputs from state alone:
    // in one block Verilator would see valid -> ready as a combinational loop through the master.
    always_comb begin
        w_pend = w_act && s_axi_wvalid;
        grant_r = ok_r && (both_ok || !w_pend || !prio_w);
        r_fire = r_pend && grant_r && (!s_axi_rvalid || s_axi_rready);
        ar_fire = s_axi_arvalid && s_axi_arready;
        aw_fire = s_axi_awvalid && s_axi_awready;
        w_fire = s_axi_wvalid && s_axi_wready;
        ar_pop = arq_count != '0 && (!r_act || (r_fire && r_left == 9'd1));
        aw_pop = awq_count != '0 && (!w_act || (w_fire && w_left == 9'd1));
        b_push = w_fire && w_left == 9'd1;
        b_pop = bq_count != '0 && due(bq_due[bq_head]) && (!s_axi_bvalid || s_axi_bready);

        for (int i = 0; i < STRB; i++) w_mask[i*8 +: 8] = {8{s_axi_wstrb[i]}};
    end

    // ---------------------------------------------------------------- state
    logic [7:0] new_err;
    logic [2:0] chk;

    always_ff @(posedge clk) begin
        cyc <= cyc + 32'd1;
        new_err = '0;

        if (rst) begin
            tokens <= cap;
            prio_w <= 1'b0;
            arq_head <= '0; arq_tail <= '0; arq_count <= '0;
            awq_head <= '0; awq_tail <= '0; awq_count <= '0;
            bq_head <= '0; bq_tail <= '0; bq_count <= '0;
            r_act <= 1'b0; w_act <= 1'b0;
            s_axi_rvalid <= 1'b0; s_axi_bvalid <= 1'b0;
            rd_beats <= '0; wr_beats <= '0; rd_bytes <= '0; wr_bytes <= '0;
            err_flags <= '0;
        end else begin
            // bandwidth budget: spend on the beats of this cycle, then refill
            if (!unlimited) begin
                logic [47:0] t;
                t = tokens - (r_fire ? cost_r : 48'd0) - (w_fire ? cost_w : 48'd0) + 48'(bw_num);
                tokens <= t > cap ? cap : t;
            end
            if (r_fire) prio_w <= 1'b1;
            else if (w_fire) prio_w <= 1'b0;
            else if (r_pend && w_pend) prio_w <= !prio_w;

            // AR queue
            if (ar_fire) begin
                arq_id[arq_tail] <= s_axi_arid;
                arq_addr[arq_tail] <= s_axi_araddr;
                arq_len[arq_tail] <= s_axi_arlen;
                arq_size[arq_tail] <= s_axi_arsize;
                arq_burst[arq_tail] <= s_axi_arburst;
                arq_due[arq_tail] <= cyc + rd_lat - 32'd1;
                arq_tail <= arq_tail + 1'b1;
                chk = check_request(s_axi_araddr, s_axi_arlen, s_axi_arsize, s_axi_arburst);
                new_err[0] = chk[0];
                new_err[3:2] = chk[2:1];
            end
            arq_count <= arq_count + (RQ_BITS + 1)'(ar_fire) - (RQ_BITS + 1)'(ar_pop);

            // R beats
            if (r_fire) begin
                logic ok;
                ok = in_range(r_addr);
                s_axi_rvalid <= 1'b1;
                s_axi_rid <= r_id;
                s_axi_rdata <= ok ? mem[word_index(r_addr)] : '0;
                s_axi_rresp <= ok ? OKAY : DECERR;
                s_axi_rlast <= r_left == 9'd1;
                r_addr <= next_addr(r_addr, r_size, r_burst, r_wrap);
                r_left <= r_left - 9'd1;
                if (r_left == 9'd1) r_act <= 1'b0;
                rd_beats <= rd_beats + 64'd1;
                rd_bytes <= rd_bytes + 64'(beat_bytes(r_addr, r_size));
                new_err[5] = !ok;
            end else if (s_axi_rready) begin
                s_axi_rvalid <= 1'b0;
            end
            if (ar_pop) begin
                r_act <= 1'b1;
                r_id <= arq_id[arq_head];
                r_addr <= arq_addr[arq_head];
                r_wrap <= wrap_mask_of(arq_len[arq_head], arq_size[arq_head]);
                r_left <= 9'(arq_len[arq_head]) + 9'd1;
                r_size <= arq_size[arq_head];
                r_burst <= arq_burst[arq_head];
                r_due <= arq_due[arq_head];
                arq_head <= arq_head + 1'b1;
            end

            // AW queue
            if (aw_fire) begin
                awq_id[awq_tail] <= s_axi_awid;
                awq_addr[awq_tail] <= s_axi_awaddr;
                awq_len[awq_tail] <= s_axi_awlen;
                awq_size[awq_tail] <= s_axi_awsize;
                awq_burst[awq_tail] <= s_axi_awburst;
                awq_tail <= awq_tail + 1'b1;
                chk = check_request(s_axi_awaddr, s_axi_awlen, s_axi_awsize, s_axi_awburst);
                new_err[1] = chk[0];
                new_err[3:2] = new_err[3:2] | chk[2:1];
            end
            awq_count <= awq_count + (WQ_BITS + 1)'(aw_fire) - (WQ_BITS + 1)'(aw_pop);

            // W beats
            if (w_fire) begin
                logic ok;
                ok = in_range(w_addr);
                if (ok) begin
                    logic [WI_BITS-1:0] wi;
                    wi = word_index(w_addr);
                    mem[wi] <= (mem[wi] & ~w_mask) | (s_axi_wdata & w_mask);
                end
                new_err[4] = s_axi_wlast != (w_left == 9'd1);
                new_err[6] = !ok;
                new_err[7] = (s_axi_wstrb & ~w_lanes) != '0;
                w_addr <= next_addr(w_addr, w_size, w_burst, w_wrap);
                w_left <= w_left - 9'd1;
                w_err <= w_err || !ok;
                if (w_left == 9'd1) w_act <= 1'b0;
                wr_beats <= wr_beats + 64'd1;
                wr_bytes <= wr_bytes + 64'($countones(s_axi_wstrb));
            end
            if (aw_pop) begin
                w_act <= 1'b1;
                w_id <= awq_id[awq_head];
                w_addr <= awq_addr[awq_head];
                w_wrap <= wrap_mask_of(awq_len[awq_head], awq_size[awq_head]);
                w_left <= 9'(awq_len[awq_head]) + 9'd1;
                w_size <= awq_size[awq_head];
                w_burst <= awq_burst[awq_head];
                w_err <= 1'b0;
                awq_head <= awq_head + 1'b1;
            end

            // B responses
            if (b_push) begin
                bq_id[bq_tail] <= w_id;
                bq_resp[bq_tail] <= (w_err || !in_range(w_addr)) ? DECERR : OKAY;
                bq_due[bq_tail] <= cyc + wr_lat - 32'd1;
                bq_tail <= bq_tail + 1'b1;
            end
            if (b_pop) begin
                s_axi_bvalid <= 1'b1;
                s_axi_bid <= bq_id[bq_head];
                s_axi_bresp <= bq_resp[bq_head];
                bq_head <= bq_head + 1'b1;
            end else if (s_axi_bready) begin
                s_axi_bvalid <= 1'b0;
            end
            bq_count <= bq_count + (WQ_BITS + 1)'(b_push) - (WQ_BITS + 1)'(b_pop);

            err_flags <= err_flags | new_err;
            if (VERBOSE) begin
                for (int i = 0; i < 8; i++)
                    if (new_err[i] && !err_flags[i])
                        $display("axi_dram %s: error flag %0d raised at cycle %0d (see err_flags in axi_dram.sv)", NAME, i, cyc);
            end
        end

        // bulk access works in and out of reset
        if (load) $readmemh(load_file, mem);
        if (dump) $writememh(dump_file, mem, dump_first, dump_last);
    end
endmodule

`default_nettype wire
