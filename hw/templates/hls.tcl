# Vitis HLS project for edgevit_top. Run in this folder: vitis_hls -f hls.tcl
# (not run by edgevit: no Vitis here). Vitis brings its own ap_int.h; edgevit's unit headers are in include/.
open_project -reset edgevit_prj
set_top edgevit_top
add_files top.cpp -cflags "-std=c++14 -Iinclude -I."
add_files -tb tb.cpp -cflags "-std=c++14 -Iinclude -I."
add_files -tb program.bin
add_files -tb params.bin
add_files -tb testdata
open_solution -reset solution1 -flow_target vivado
set_part {{part}}
create_clock -period {{clock_period_ns}} -name default
csim_design
csynth_design
cosim_design
export_design -format ip_catalog
exit
