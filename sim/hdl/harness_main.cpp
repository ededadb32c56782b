// harness_main.cpp: the Verilator main of the engine harnesses (sim/hdl/rtl_top.sv,
// tests/hw/tb_engine.sv), in place of cocotb's own (codenet.sim.runner.build(clock_ps=...)).
//
// Why: a whole network runs for millions of cycles with no Python work per cycle, so what the
// main loop does around each eval() is a visible share of the simulation (docs/simulation.md
// § The rtl backend's speed). This loop differs from cocotb's in two ways and keeps its VPI
// contract otherwise:
//
// * The clock is toggled here, on the top-level input `clk`, every CODENET_CLOCK_PERIOD_PS / 2
//   picoseconds from time 0 (first rising edge at half a period). Neither cocotb's Clock (a
//   VPI write and a Python wake-up per edge) nor an HDL clock (Verilator --timing: a coroutine
//   resumed per edge) is needed. cocotb sees the edges as value changes like any other.
// * VPI callback lists are only walked when something can have happened: value-change
//   callbacks after each eval() and after callbacks that ran (they may have written signals),
//   after timed callbacks only when one was due. cocotb's loop walks every list four times per
//   time step, two time steps per cycle.
//
// Time steps are the clock's edges and cocotb's timer deadlines, whichever comes first; at a
// time step, timed callbacks run first (they may write inputs), then the clock edge is applied
// and the design is evaluated until neither it nor the callbacks change anything (read-write
// synch), then read-only synch.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "Vtop.h"
#include "verilated.h"
#include "verilated_vpi.h"

#if VM_TRACE
#if VM_TRACE_FST
#include <verilated_fst_c.h>
using TraceFile = VerilatedFstC;
static const char* const DEFAULT_TRACE = "dump.fst";
#else
#include <verilated_vcd_c.h>
using TraceFile = VerilatedVcdC;
static const char* const DEFAULT_TRACE = "dump.vcd";
#endif
static TraceFile* g_trace = nullptr;
#endif

#ifndef CODENET_CLOCK_PERIOD_PS
#error "build with -CFLAGS -DCODENET_CLOCK_PERIOD_PS=<clock period in ps>"
#endif

extern "C" void vlog_startup_routines_bootstrap(void);

// Verilator asks this only while the context's own time is still 0 (we set it from the first
// time step on), so the simulation time lives in one place.
double sc_time_stamp() { return 0.0; }

// Run value-change callbacks until none fires; true if any did.
static bool settle() {
    bool any = false;
    while (VerilatedVpi::callValueCbs()) any = true;
    return any;
}

static void wrap_up() {
    VerilatedVpi::callCbs(cbEndOfSimulation);
#if VM_TRACE
    if (g_trace) g_trace->close();
#endif
}

// One clock period in the model's time precision (10^timeprecision s); 0 if it is not a
// whole number of precision units.
static uint64_t period_in_precision(const VerilatedContext& ctx) {
    int exp = -12 - ctx.timeprecision();  // ps -> precision units: multiply by 10^exp
    uint64_t p = CODENET_CLOCK_PERIOD_PS;
    for (; exp > 0; --exp) p *= 10;
    for (; exp < 0; ++exp) {
        if (p % 10) return 0;
        p /= 10;
    }
    return p;
}

int main(int argc, char** argv) {
    bool trace_on = false;
    std::string trace_file;
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        if (a == "--trace") {
            trace_on = true;
        } else if (a == "--trace-file" && i + 1 < argc) {
            trace_file = argv[++i];
        }
    }

    Verilated::commandArgs(argc, argv);
    const std::unique_ptr<Vtop> top{new Vtop{""}};
    Verilated::fatalOnVpiError(false);  // cocotb probes handles that may not exist

    const uint64_t period = period_in_precision(*Verilated::threadContextp());
    const uint64_t half = period / 2;
    if (half == 0 || period % 2) {
        std::fprintf(stderr, "harness_main: clock period %llu ps is not an even number of time-precision units (10^%d s)\n",
                     static_cast<unsigned long long>(CODENET_CLOCK_PERIOD_PS), Verilated::threadContextp()->timeprecision());
        return 2;
    }

#if VM_TRACE
    Verilated::traceEverOn(true);
    if (trace_on) {
        g_trace = new TraceFile;
        top->trace(g_trace, 99);
        g_trace->open(trace_file.empty() ? DEFAULT_TRACE : trace_file.c_str());
    }
#else
    if (trace_on) {
        std::fprintf(stderr, "harness_main: --trace needs a build with tracing (waves)\n");
        return 2;
    }
#endif

    top->clk = 0;
    uint64_t next_edge = half;

    vlog_startup_routines_bootstrap();
    Verilated::addExitCb([](void*) { wrap_up(); }, nullptr);
    VerilatedVpi::callCbs(cbStartOfSimulation);
    settle();

    while (!Verilated::gotFinish()) {
        do {
            do {
                top->eval_step();
                VerilatedVpi::clearEvalNeeded();
                VerilatedVpi::doInertialPuts();
                settle();
            } while (VerilatedVpi::evalNeeded());
            if (VerilatedVpi::callCbs(cbReadWriteSynch)) {
                VerilatedVpi::doInertialPuts();
                settle();
            }
        } while (VerilatedVpi::evalNeeded());
        top->eval_end_step();
        VerilatedVpi::callCbs(cbReadOnlySynch);
#if VM_TRACE
        if (g_trace) g_trace->dump(Verilated::threadContextp()->time());
#endif

        const uint64_t deadline = VerilatedVpi::cbNextDeadline();
        uint64_t next = std::min<uint64_t>(next_edge, deadline);
#ifdef VM_TIMING
#if VM_TIMING
        if (top->eventsPending()) next = std::min<uint64_t>(next, top->nextTimeSlot());
#endif
#endif
        Verilated::threadContextp()->time(next);
        if (VerilatedVpi::callCbs(cbNextSimTime)) settle();
        // Every callCbs() moves the timed callbacks that are due into the list this one runs,
        // so the deadline is read before; the call itself is cheap when nothing is due.
        VerilatedVpi::callTimedCbs();
        if (deadline <= next) settle();
        // The edge comes last, right before the eval: value-change callbacks on `clk` then
        // always run after the design has seen the edge, as they do under cocotb's own loop
        // (a callback that ran before the eval would read the registers' old values).
        if (next == next_edge) {
            top->clk = !top->clk;
            next_edge += half;
        }
    }

    top->final();
    wrap_up();
#if VM_TRACE
    delete g_trace;
    g_trace = nullptr;
#endif
    return Verilated::threadContextp()->errorCount() > 0 ? 1 : 0;
}
