package control

// controlpb is generated from control.proto; gen.sh pins the plugins.
//go:generate sh gen.sh
