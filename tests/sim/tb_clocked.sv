// tb_clocked: a counter for the C++ clock of sim/hdl/harness_main.cpp (tests/sim/test_harness_main.py).
`default_nettype none

module tb_clocked (
    input  wire         clk /*verilator public_flat_rd*/,
    input  wire         rst /*verilator public_flat_rw*/,
    input  wire  [31:0] poke /*verilator public_flat_rw*/,
    input  wire  [31:0] flag_at /*verilator public_flat_rw*/,
    output logic [31:0] count /*verilator public_flat_rd*/,
    output logic [31:0] seen /*verilator public_flat_rd*/,
    output logic        flag /*verilator public_flat_rd*/
);
    // count: rising edges since reset; seen: `poke` as sampled at the last edge;
    // flag: high for one cycle after the edge at which count reached flag_at
    always_ff @(posedge clk) begin
        count <= rst ? 32'd0 : count + 32'd1;
        seen <= poke;
        flag <= !rst && count + 32'd1 == flag_at;
    end
endmodule

`default_nettype wire
