# Stand-ins for the Vivado Tcl commands the generated project scripts use, for tclsh.
#
#     tclsh vivado_stubs.tcl LOG SCRIPT ?ARG ...?
#
# sources SCRIPT (with ::argv set to the ARGs, as `vivado -source SCRIPT -tclargs ARG ...`
# would) and writes one JSON object per line to LOG: {"cmd", "args", "opts", "pos"} for every
# Vivado command called, then {"done": true}, or {"error": MESSAGE} when the script raised an
# error. Strictness is the point: a command with no stand-in, an option a stand-in does not
# know, a wrong number of arguments, or an object that was never created (a cell, a pin of a
# cell that does not exist, a run, a core) writes {"fail": MESSAGE} and exits with status 3,
# even inside a `catch`. The stand-ins keep just enough state to answer queries the way Vivado
# would: cells, the packaged IP's bus interfaces (CODENET_STUB_BUSIFS: "kind name" pairs,
# kind one of aximm_rtl clock_rtl reset_rtl interrupt_rtl, what Vivado would infer from the
# ports), the installed board parts (CODENET_STUB_BOARD_PARTS, a Tcl list), the IP catalogue
# (what ipx::save_core wrote under an ip_repo_paths folder). `exec` is taken away: the
# generated scripts have no business running programs.
# Runs "produce" placeholder files where Vivado writes the bitstream and the .hwh, so that the
# copying steps of the script are exercised too.

if {[llength $argv] < 2} {
    puts stderr "usage: tclsh vivado_stubs.tcl LOG SCRIPT ?ARG ...?"
    exit 2
}
set ::stub_fh [open [lindex $argv 0] w]
fconfigure $::stub_fh -encoding utf-8
set ::stub_script [file normalize [lindex $argv 1]]
set ::argv [lrange $argv 2 end]
set ::argc [llength $::argv]

# ------------------------------------------------------------------ logging
proc stub_json {s} {
    set out ""
    foreach c [split $s ""] {
        scan $c %c code
        if {$code == 34} {
            append out "\\\""
        } elseif {$code == 92} {
            append out "\\\\"
        } elseif {$code < 32} {
            append out [format "\\u%04x" $code]
        } else {
            append out $c
        }
    }
    return "\"$out\""
}

proc stub_json_list {items} {
    set parts {}
    foreach i $items { lappend parts [stub_json $i] }
    return "\[[join $parts {, }]\]"
}

proc stub_write {line} {
    puts $::stub_fh $line
    flush $::stub_fh
}

proc stub_fail {msg} {
    stub_write "{\"fail\": [stub_json $msg]}"
    puts stderr "STUB FAILURE: $msg"
    close $::stub_fh
    exit 3
}

# Anything without a stand-in lands here (tclsh would otherwise try to exec a program).
proc unknown {args} {
    stub_fail "no stand-in for command '[lindex $args 0]' (called as: $args)"
}

# ------------------------------------------------------------------ stand-in definitions
# stub NAME VALUE_OPTIONS FLAG_OPTIONS MIN_POSITIONAL MAX_POSITIONAL(-1: any) BODY
# BODY runs with `opts` (a dict: option -> value, or 1 for a flag) and `pos` (the positionals).
proc stub {name valopts flagopts minpos maxpos body} {
    set ::stub_spec($name) [list $valopts $flagopts $minpos $maxpos]
    proc ::$name {args} [string map [list @NAME@ [list $name] @BODY@ $body] {
        lassign [::stub_call @NAME@ $args] opts pos
        @BODY@
    }]
}

proc stub_call {name arglist} {
    lassign $::stub_spec($name) valopts flagopts minpos maxpos
    set opts [dict create]
    set pos {}
    set n [llength $arglist]
    for {set i 0} {$i < $n} {incr i} {
        set a [lindex $arglist $i]
        if {[string match -* $a] && ![string is double -strict $a]} {
            if {$a in $valopts} {
                incr i
                if {$i >= $n} { stub_fail "$name: option $a wants a value (called as: $name $arglist)" }
                dict set opts $a [lindex $arglist $i]
            } elseif {$a in $flagopts} {
                dict set opts $a 1
            } else {
                stub_fail "$name: unknown option '$a' (called as: $name $arglist)"
            }
        } else {
            lappend pos $a
        }
    }
    if {[llength $pos] < $minpos || ($maxpos >= 0 && [llength $pos] > $maxpos)} {
        stub_fail "$name: [llength $pos] positional arguments, wants $minpos..$maxpos (called as: $name $arglist)"
    }
    set o {}
    dict for {k v} $opts {
        if {$k in $flagopts} {
            lappend o "[stub_json $k]: true"
        } else {
            lappend o "[stub_json $k]: [stub_json $v]"
        }
    }
    stub_write "{\"cmd\": [stub_json $name], \"args\": [stub_json_list $arglist], \"opts\": {[join $o {, }]}, \"pos\": [stub_json_list $pos]}"
    return [list $opts $pos]
}

proc stub_need {cond msg} {
    if {![uplevel 1 [list expr $cond]]} { stub_fail $msg }
}

proc stub_touch {path text} {
    file mkdir [file dirname $path]
    set f [open $path w]
    puts $f $text
    close $f
}

# ------------------------------------------------------------------ state
set ::stub_projects {}          ;# stack of open projects: {name dir}
set ::stub_cells [dict create]  ;# block design cell -> vlnv
set ::stub_bd ""
set ::stub_core ""
set ::stub_core_props [dict create]
set ::stub_busifs {}
set ::stub_params {}
set ::stub_memmaps {}
set ::stub_spaces {}
set ::stub_saved_ip ""
set ::stub_ip_repo_paths {}
set ::stub_handles [dict create] ;# objects handed out by get_* queries
set ::stub_launched {}
set ::stub_wrapper ""
set ::stub_inferable {}
if {[info exists ::env(CODENET_STUB_BUSIFS)]} { set ::stub_inferable $::env(CODENET_STUB_BUSIFS) }
set ::stub_board_parts {}
if {[info exists ::env(CODENET_STUB_BOARD_PARTS)]} { set ::stub_board_parts $::env(CODENET_STUB_BOARD_PARTS) }

proc stub_proj_dir {} {
    stub_need {[llength $::stub_projects] > 0} "no open project"
    return [lindex $::stub_projects end 1]
}
proc stub_proj_name {} {
    stub_need {[llength $::stub_projects] > 0} "no open project"
    return [lindex $::stub_projects end 0]
}
proc stub_handle {kind name} {
    dict set ::stub_handles "$kind:$name" 1
    return $name
}
proc stub_is {kind obj} {
    return [dict exists $::stub_handles "$kind:$obj"]
}
proc stub_cell_of {path} {
    set p [string trimleft $path /]
    set cell [lindex [split $p /] 0]
    stub_need {[dict exists $::stub_cells $cell]} "'$path' names cell '$cell', which was never created"
    return $cell
}

# ------------------------------------------------------------------ projects and files
stub create_project {-part} {-force} 1 2 {
    stub_need {[dict exists $opts -part]} "create_project without -part"
    set dir [expr {[llength $pos] > 1 ? [lindex $pos 1] : [file join [pwd] [lindex $pos 0]]}]
    lappend ::stub_projects [list [lindex $pos 0] $dir]
    set ::stub_cells [dict create]
    set ::stub_bd ""
    return [lindex $pos 0]
}
stub close_project {} {} 0 0 {
    stub_need {[llength $::stub_projects] > 0} "close_project with no open project"
    set ::stub_projects [lrange $::stub_projects 0 end-1]
    return ""
}
stub current_project {} {} 0 0 { return [stub_handle project [stub_proj_name]] }
stub current_fileset {} {} 0 0 { stub_proj_name; return [stub_handle fileset sources_1] }
stub add_files {-fileset} {-norecurse} 1 -1 {
    stub_proj_name
    foreach f $pos {
        stub_need {[file exists $f] || $f eq $::stub_wrapper} "add_files: '$f' does not exist"
    }
    return $pos
}
stub update_compile_order {-fileset} {} 0 0 { stub_proj_name; return "" }
stub get_files {} {-quiet} 1 1 {
    set name [lindex $pos 0]
    stub_need {$::stub_bd ne "" && $name eq "$::stub_bd.bd"} "get_files $name: no such file in the project"
    return [stub_handle file [file join [stub_proj_dir] "[stub_proj_name].srcs" sources_1 bd $::stub_bd $name]]
}
stub set_param {} {} 2 2 { return "" }
stub get_board_parts {} {-quiet -latest_file_version} 1 1 {
    set found {}
    foreach bp $::stub_board_parts {
        if {[string match [lindex $pos 0] $bp]} { lappend found $bp }
    }
    if {[dict exists $opts -latest_file_version]} { set found [lrange [lsort -decreasing $found] 0 0] }
    return $found
}

# set_property NAME VALUE OBJECTS, or set_property -dict {NAME VALUE ...} OBJECTS
stub set_property {-dict} {-quiet} 1 3 {
    if {[dict exists $opts -dict]} {
        stub_need {[llength $pos] == 1} "set_property -dict wants exactly the objects after the list"
        stub_need {[llength [dict get $opts -dict]] % 2 == 0} "set_property -dict: odd-length list"
        set props [dict get $opts -dict]
    } else {
        stub_need {[llength $pos] == 3} "set_property wants NAME VALUE OBJECTS"
        set props [lrange $pos 0 1]
    }
    set objs [lindex $pos end]
    stub_need {[llength $objs] > 0} "set_property [lindex $pos 0] on no object"
    foreach obj $objs {
        stub_need {[stub_is project $obj] || [stub_is fileset $obj] || [stub_is cell $obj] || [stub_is ipx $obj]} \
            "set_property on '$obj', which no query or constructor returned"
    }
    dict for {k v} $props {
        if {$k eq "ip_repo_paths"} { set ::stub_ip_repo_paths $v }
        if {$objs eq $::stub_core} { dict set ::stub_core_props $k $v }
    }
    return ""
}

# ------------------------------------------------------------------ IP packaging
namespace eval ipx {}
stub ipx::package_project {-root_dir -vendor -library -taxonomy -set_current} {-import_files} 0 0 {
    foreach o {-root_dir -vendor -library} { stub_need {[dict exists $opts $o]} "ipx::package_project without $o" }
    stub_proj_name
    set ::stub_core core_0
    stub_handle ipx core_0
    set ::stub_core_props [dict create vendor [dict get $opts -vendor] library [dict get $opts -library] \
        name [stub_proj_name] version 1.0 root_dir [file normalize [dict get $opts -root_dir]]]
    set ::stub_busifs {}
    return core_0
}
stub ipx::current_core {} {} 0 0 {
    stub_need {$::stub_core ne ""} "ipx::current_core: no core"
    return $::stub_core
}
proc stub_core_arg {obj} {
    stub_need {$::stub_core ne "" && $obj eq $::stub_core} "'$obj' is not the current core"
}
stub ipx::infer_bus_interfaces {} {} 2 2 {
    stub_core_arg [lindex $pos 1]
    set vlnv [lindex $pos 0]
    stub_need {[regexp {^xilinx\.com:(interface|signal):([a-z_]+):1\.0$} $vlnv -> _ kind]} "unknown bus definition '$vlnv'"
    foreach {k name} $::stub_inferable {
        if {$k eq $kind && $name ni $::stub_busifs} { lappend ::stub_busifs $name }
    }
    return ""
}
stub ipx::get_bus_interfaces {-of_objects} {-quiet} 1 1 {
    stub_core_arg [dict get $opts -of_objects]
    set name [lindex $pos 0]
    if {$name in $::stub_busifs} { return [stub_handle ipx "busif:$name"] }
    stub_need {[dict exists $opts -quiet]} "ipx::get_bus_interfaces: no bus interface '$name' (inferred: $::stub_busifs)"
    return ""
}
stub ipx::associate_bus_interfaces {-busif -clock -reset} {} 1 1 {
    stub_core_arg [lindex $pos 0]
    foreach o {-busif -clock -reset} {
        if {[dict exists $opts $o]} {
            set b [dict get $opts $o]
            stub_need {$b in $::stub_busifs} "ipx::associate_bus_interfaces $o $b: no such bus interface"
        }
    }
    stub_need {[dict exists $opts -clock]} "ipx::associate_bus_interfaces without -clock"
    return ""
}
stub ipx::get_bus_parameters {-of_objects} {-quiet} 1 1 {
    set bif [dict get $opts -of_objects]
    stub_need {[stub_is ipx $bif] && [string match busif:* $bif]} "ipx::get_bus_parameters -of_objects '$bif': not a bus interface"
    set h "param:$bif:[lindex $pos 0]"
    if {$h in $::stub_params} { return $h }
    stub_need {[dict exists $opts -quiet]} "ipx::get_bus_parameters: none named [lindex $pos 0]"
    return ""
}
stub ipx::add_bus_parameter {} {} 2 2 {
    set bif [lindex $pos 1]
    stub_need {[stub_is ipx $bif] && [string match busif:* $bif]} "ipx::add_bus_parameter on '$bif': not a bus interface"
    set h "param:$bif:[lindex $pos 0]"
    lappend ::stub_params $h
    return [stub_handle ipx $h]
}
stub ipx::get_memory_maps {-of_objects} {-quiet} 1 1 {
    stub_core_arg [dict get $opts -of_objects]
    set h "memmap:[lindex $pos 0]"
    return [expr {$h in $::stub_memmaps ? $h : ""}]
}
stub ipx::remove_memory_map {} {} 2 2 {
    stub_core_arg [lindex $pos 1]
    set h "memmap:[lindex $pos 0]"
    stub_need {$h in $::stub_memmaps} "ipx::remove_memory_map: none named [lindex $pos 0]"
    set ::stub_memmaps [lsearch -all -inline -not -exact $::stub_memmaps $h]
    return ""
}
stub ipx::add_memory_map {} {} 2 2 {
    stub_core_arg [lindex $pos 1]
    set h "memmap:[lindex $pos 0]"
    stub_need {$h ni $::stub_memmaps} "ipx::add_memory_map: [lindex $pos 0] exists"
    lappend ::stub_memmaps $h
    return [stub_handle ipx $h]
}
stub ipx::add_address_block {} {} 2 2 {
    set mm [lindex $pos 1]
    stub_need {$mm in $::stub_memmaps} "ipx::add_address_block on '$mm': not a memory map"
    return [stub_handle ipx "block:$mm:[lindex $pos 0]"]
}
stub ipx::get_address_spaces {-of_objects} {-quiet} 1 1 {
    stub_core_arg [dict get $opts -of_objects]
    set h "space:[lindex $pos 0]"
    return [expr {$h in $::stub_spaces ? $h : ""}]
}
stub ipx::remove_address_space {} {} 2 2 {
    stub_core_arg [lindex $pos 1]
    set h "space:[lindex $pos 0]"
    stub_need {$h in $::stub_spaces} "ipx::remove_address_space: none named [lindex $pos 0]"
    set ::stub_spaces [lsearch -all -inline -not -exact $::stub_spaces $h]
    return ""
}
stub ipx::add_address_space {} {} 2 2 {
    stub_core_arg [lindex $pos 1]
    set h "space:[lindex $pos 0]"
    stub_need {$h ni $::stub_spaces} "ipx::add_address_space: [lindex $pos 0] exists"
    lappend ::stub_spaces $h
    return [stub_handle ipx $h]
}
foreach c {create_xgui_files update_checksums check_integrity} {
    stub ipx::$c {} {} 1 1 { stub_core_arg [lindex $pos 0]; return "" }
}
stub ipx::save_core {} {} 1 1 {
    stub_core_arg [lindex $pos 0]
    set p $::stub_core_props
    set ::stub_saved_ip [list "[dict get $p vendor]:[dict get $p library]:[dict get $p name]:[dict get $p version]" [dict get $p root_dir]]
    stub_touch [file join [dict get $p root_dir] component.xml] "<!-- stub component.xml -->"
    return ""
}
stub update_ip_catalog {} {-rebuild} 0 0 { return "" }
stub get_ipdefs {} {-quiet -all} 1 1 {
    lassign $::stub_saved_ip vlnv root
    if {$vlnv eq "" || ![string match [lindex $pos 0] $vlnv]} { return "" }
    foreach repo $::stub_ip_repo_paths {
        set repo [file normalize $repo]
        if {[string first "$repo/" "$root/"] == 0} { return $vlnv }
    }
    return ""
}

# ------------------------------------------------------------------ block design
stub create_bd_design {} {} 1 1 {
    stub_proj_name
    set ::stub_bd [lindex $pos 0]
    return [lindex $pos 0]
}
stub create_bd_cell {-type -vlnv} {} 1 1 {
    stub_need {$::stub_bd ne ""} "create_bd_cell before create_bd_design"
    stub_need {[dict exists $opts -type] && [dict get $opts -type] eq "ip"} "create_bd_cell: -type ip expected"
    stub_need {[dict exists $opts -vlnv]} "create_bd_cell without -vlnv"
    set name [lindex $pos 0]
    stub_need {![dict exists $::stub_cells $name]} "create_bd_cell: cell $name exists"
    set vlnv [dict get $opts -vlnv]
    if {[string match codenet.dev:* $vlnv]} {
        stub_need {[lindex $::stub_saved_ip 0] eq $vlnv} "create_bd_cell $vlnv: not in the IP catalogue"
    }
    dict set ::stub_cells $name $vlnv
    return [stub_handle cell "/$name"]
}
stub get_bd_cells {} {-quiet} 1 1 {
    set name [string trimleft [lindex $pos 0] /]
    stub_cell_of $name
    return [stub_handle cell "/$name"]
}
stub get_bd_pins {} {-quiet} 1 1 {
    set p [lindex $pos 0]
    stub_cell_of $p
    stub_need {[llength [split [string trimleft $p /] /]] == 2} "get_bd_pins '$p': CELL/PIN expected"
    return [stub_handle pin "/[string trimleft $p /]"]
}
stub get_bd_intf_pins {} {-quiet} 1 1 {
    set p [lindex $pos 0]
    stub_cell_of $p
    stub_need {[llength [split [string trimleft $p /] /]] == 2} "get_bd_intf_pins '$p': CELL/PIN expected"
    return [stub_handle intf "/[string trimleft $p /]"]
}
stub get_bd_addr_spaces {} {-quiet} 1 1 {
    set p [lindex $pos 0]
    stub_cell_of $p
    return [stub_handle space [string trimleft $p /]]
}
stub get_bd_addr_segs {} {-quiet} 1 1 {
    set p [lindex $pos 0]
    stub_cell_of $p
    stub_need {[llength [split [string trimleft $p /] /]] == 3} "get_bd_addr_segs '$p': CELL/INTERFACE/SEGMENT expected"
    return [stub_handle seg [string trimleft $p /]]
}
stub apply_bd_automation {-rule -config} {} 1 1 {
    stub_need {[dict exists $opts -rule]} "apply_bd_automation without -rule"
    stub_need {[stub_is cell [lindex $pos 0]]} "apply_bd_automation on '[lindex $pos 0]': not a cell"
    return ""
}
stub connect_bd_intf_net {} {} 2 2 {
    foreach p $pos { stub_need {[stub_is intf $p]} "connect_bd_intf_net: '$p' is not an interface pin from get_bd_intf_pins" }
    return ""
}
stub connect_bd_net {} {} 2 -1 {
    foreach p $pos { stub_need {[stub_is pin $p]} "connect_bd_net: '$p' is not a pin from get_bd_pins" }
    return ""
}
stub assign_bd_address {-offset -range -target_address_space} {-force} 1 1 {
    foreach o {-offset -range -target_address_space} { stub_need {[dict exists $opts $o]} "assign_bd_address without $o" }
    stub_need {[stub_is space [dict get $opts -target_address_space]]} "assign_bd_address: the target is not an address space"
    stub_need {[stub_is seg [lindex $pos 0]]} "assign_bd_address: '[lindex $pos 0]' is not a segment from get_bd_addr_segs"
    return ""
}
stub validate_bd_design {} {} 0 0 { stub_need {$::stub_bd ne ""} "no block design"; return "" }
stub save_bd_design {} {} 0 0 { stub_need {$::stub_bd ne ""} "no block design"; return "" }
stub generate_target {} {} 2 2 {
    stub_need {[stub_is file [lindex $pos 1]]} "generate_target: '[lindex $pos 1]' is not a file from get_files"
    # Vivado 2020.2 and later write the hardware handoff here.
    set hwh [file join [stub_proj_dir] "[stub_proj_name].gen" sources_1 bd $::stub_bd hw_handoff "$::stub_bd.hwh"]
    stub_touch $hwh "<!-- stub hwh of $::stub_bd -->"
    return ""
}
stub make_wrapper {-files} {-top} 0 0 {
    stub_need {[stub_is file [dict get $opts -files]]} "make_wrapper -files: not a file from get_files"
    set ::stub_wrapper [file join [stub_proj_dir] "[stub_proj_name].gen" sources_1 bd $::stub_bd hdl "${::stub_bd}_wrapper.v"]
    return $::stub_wrapper
}

# ------------------------------------------------------------------ runs
stub get_runs {} {-quiet} 1 1 {
    stub_need {[lindex $pos 0] in {synth_1 impl_1}} "get_runs: no run [lindex $pos 0]"
    return [lindex $pos 0]
}
stub launch_runs {-jobs -to_step} {} 1 1 {
    set run [lindex $pos 0]
    stub_need {$run in {synth_1 impl_1}} "launch_runs: no run $run"
    if {$run eq "impl_1"} { stub_need {"synth_1" in $::stub_launched} "impl_1 launched before synth_1" }
    lappend ::stub_launched $run
    if {$run eq "impl_1" && [dict exists $opts -to_step] && [dict get $opts -to_step] eq "write_bitstream"} {
        stub_touch [file join [stub_proj_dir] "[stub_proj_name].runs" impl_1 "${::stub_bd}_wrapper.bit"] "stub bitstream"
    }
    return ""
}
stub wait_on_run {} {} 1 1 {
    stub_need {[lindex $pos 0] in $::stub_launched} "wait_on_run [lindex $pos 0]: not launched"
    return ""
}
stub get_property {} {-quiet} 2 2 {
    lassign $pos prop obj
    stub_need {$obj in $::stub_launched} "get_property $prop of '$obj': not a launched run"
    switch -- $prop {
        PROGRESS { return "100%" }
        STATUS { return "write_bitstream Complete!" }
        DIRECTORY { return [file join [stub_proj_dir] "[stub_proj_name].runs" $obj] }
        STATS.WNS { return 0.125 }
        default { stub_fail "get_property: no stand-in for property $prop" }
    }
}
stub open_run {} {} 1 1 {
    stub_need {[lindex $pos 0] in $::stub_launched} "open_run [lindex $pos 0]: not launched"
    return ""
}
foreach c {report_utilization report_timing_summary} {
    stub $c {-file} {} 0 0 {
        stub_need {[dict exists $opts -file]} "report without -file"
        stub_touch [dict get $opts -file] "stub report"
        return ""
    }
}

# ------------------------------------------------------------------ run the script
rename exec ""
if {[catch {uplevel #0 [list source $::stub_script]} err]} {
    stub_write "{\"error\": [stub_json $err]}"
    close $::stub_fh
    puts stderr "ERROR: $err"
    exit 1
}
stub_write "{\"done\": true}"
close $::stub_fh
exit 0
