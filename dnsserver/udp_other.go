//go:build !(linux && (amd64 || arm64))

package dnsserver

import "net"

// serveUDPBatch falls back to one datagram per system call.
func (s *Server) serveUDPBatch(conn *net.UDPConn) { s.serveUDP(conn) }
