# Vivado block design for {{board}}: PS + edgevit_top. Run: vivado -mode batch -source vivado_bd.tcl
# (not run by edgevit: no Vivado here). Needs the IP exported by hls.tcl.
create_project -force edgevit_bd ./edgevit_bd -part {{part}}
{{board_part}}
set_property ip_repo_paths ./edgevit_prj/solution1/impl/ip [current_project]
update_ip_catalog
create_bd_design edgevit
create_bd_cell -type ip -vlnv xilinx.com:ip:{{ps_ip}}:* ps
apply_bd_automation -rule xilinx.com:bd_rule:{{ps_ip}} -config {apply_board_preset "1"} [get_bd_cells ps]
create_bd_cell -type ip -vlnv xilinx.com:hls:edgevit_top:1.0 edgevit_top
apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config {Master "/ps/M_AXI_GP0" Clk "Auto"} [get_bd_intf_pins edgevit_top/s_axi_control]
foreach port {m_axi_gmem0 m_axi_gmem1 m_axi_gmem2} {
    apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config [list Slave "/ps/{{hp_port}}" Clk "Auto"] [get_bd_intf_pins edgevit_top/$port]
}
validate_bd_design
make_wrapper -files [get_files edgevit.bd] -top
add_files -norecurse ./edgevit_bd/edgevit_bd.gen/sources_1/bd/edgevit/hdl/edgevit_wrapper.v
launch_runs impl_1 -to_step write_bitstream -jobs 2
wait_on_run impl_1
