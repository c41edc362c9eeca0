package control

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sidedns/sidedns/control/controlpb"
)

// DefaultSocket is where the control API listens unless --control-socket
// says otherwise.
const DefaultSocket = "/run/sidedns/control.sock"

// socketMode lets the owner and the socket's group connect; Server also
// checks each caller's credentials, because root ignores file modes and a
// socket's mode is not honoured everywhere.
const socketMode = 0o660

// ErrSocketInUse is returned when another process serves the socket.
var ErrSocketInUse = errors.New("control socket in use by another process")

// Config says where the control API listens.
type Config struct {
	Socket string // unix socket path; "" for none
	TCP    string // host:port for mutual TLS; "" for none
	// CA verifies client certificates on TCP; Cert and Key are the
	// server's. All three are PEM files, required with TCP.
	CA, Cert, Key string
	Logger        *zap.Logger
}

// Server serves the control API on its listeners.
type Server struct {
	svc     *Service
	servers []*grpc.Server
}

// Start listens as cfg says and serves svc. With neither a socket nor TCP
// configured it returns a Server that serves nothing.
func Start(cfg Config, svc *Service) (_ *Server, err error) {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	s := &Server{svc: svc}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	type listener struct {
		l   net.Listener
		srv *grpc.Server
	}
	var ls []listener
	if cfg.Socket != "" {
		l, err := ListenUnix(cfg.Socket)
		if err != nil {
			return nil, err
		}
		pc := peerCreds{self: uint32(os.Geteuid()), group: uint32(os.Getegid())}
		srv := grpc.NewServer(grpc.Creds(pc),
			grpc.ChainUnaryInterceptor(pc.unary), grpc.ChainStreamInterceptor(pc.stream))
		ls = append(ls, listener{l, srv})
		s.servers = append(s.servers, srv)
	}
	if cfg.TCP != "" {
		tc, err := serverTLS(cfg.CA, cfg.Cert, cfg.Key)
		if err != nil {
			return nil, err
		}
		l, err := net.Listen("tcp", cfg.TCP)
		if err != nil {
			return nil, fmt.Errorf("listen for control on %s: %w", cfg.TCP, err)
		}
		srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tc)))
		ls = append(ls, listener{l, srv})
		s.servers = append(s.servers, srv)
	}
	for _, l := range ls {
		controlpb.RegisterControlServer(l.srv, svc)
		go func() {
			if err := l.srv.Serve(l.l); err != nil {
				log.Error("control API stopped", zap.Stringer("addr", l.l.Addr()), zap.Error(err))
			}
		}()
		log.Info("control API listening", zap.Stringer("addr", l.l.Addr()))
	}
	return s, nil
}

// stopGrace is how long Stop lets calls finish before closing every
// connection.
const stopGrace = time.Second

// Stop ends the Watch streams, lets unary calls finish, and closes the
// listeners and every connection.
func (s *Server) Stop() {
	if s.svc != nil {
		s.svc.stop()
	}
	for _, srv := range s.servers {
		done := make(chan struct{})
		go func() {
			srv.GracefulStop()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(stopGrace):
			srv.Stop()
			<-done
		}
	}
}

// ListenUnix listens on a unix socket at path with mode 0660, creating its
// directory. A socket file left by a process that is gone is replaced; one
// that still answers is not (ErrSocketInUse).
func ListenUnix(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create control socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("control socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: %w", path, ErrSocketInUse)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale control socket: %w", err)
		}
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on control socket: %w", err)
	}
	if err := os.Chmod(path, socketMode); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod control socket: %w", err)
	}
	return l, nil
}

// serverTLS is the TLS config for TCP: TLS 1.3, client certificates
// required and verified against the CA.
func serverTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" || certFile == "" || keyFile == "" {
		return nil, errors.New("control over TCP needs --control-ca, --control-cert and --control-key")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load control certificate: %w", err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read control CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("control CA %s: no PEM certificate", caFile)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

// peerCreds are transport credentials for the unix socket: no encryption
// (the kernel carries the bytes), and the caller's uid and gid from
// SO_PEERCRED for the permission check.
type peerCreds struct {
	self, group uint32 // the server's uid, and the socket's group
}

// PeerInfo is the AuthInfo of a unix socket caller.
type PeerInfo struct {
	credentials.CommonAuthInfo
	UID, GID uint32
	PID      int32
}

func (PeerInfo) AuthType() string { return "peercred" }

func (p peerCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return nil, nil, fmt.Errorf("control socket: %T is not a unix connection", conn)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, nil, fmt.Errorf("control socket peer: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, nil, fmt.Errorf("control socket peer: %w", err)
	}
	if credErr != nil {
		return nil, nil, fmt.Errorf("control socket peer credentials: %w", credErr)
	}
	return conn, PeerInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		UID:            cred.Uid, GID: cred.Gid, PID: cred.Pid,
	}, nil
}

func (peerCreds) ClientHandshake(_ context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return conn, PeerInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (p peerCreds) Clone() credentials.TransportCredentials { return p }

func (peerCreds) OverrideServerName(string) error { return nil }

// allowed reports whether a caller may use the API: root, the server's own
// user, or a member of the socket's group, as the 0660 mode says.
func (p peerCreds) allowed(in PeerInfo) bool {
	if in.UID == 0 || in.UID == p.self || in.GID == p.group {
		return true
	}
	return slices.Contains(supplementaryGroups(in.PID), p.group)
}

// supplementaryGroups reads a process's groups from /proc. A process in
// another PID namespace shows as pid 0 and gets none.
func supplementaryGroups(pid int32) []uint32 {
	if pid <= 0 {
		return nil
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/status")
	if err != nil {
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("Groups:"))
		if !ok {
			continue
		}
		var out []uint32
		for _, f := range bytes.Fields(rest) {
			if g, err := strconv.ParseUint(string(f), 10, 32); err == nil {
				out = append(out, uint32(g))
			}
		}
		return out
	}
	return nil
}

func (p peerCreds) check(ctx context.Context) error {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return status.Error(codes.PermissionDenied, "control socket: unknown caller")
	}
	in, ok := pr.AuthInfo.(PeerInfo)
	if !ok || !p.allowed(in) {
		return status.Errorf(codes.PermissionDenied, "control socket: uid %d gid %d may not use it", in.UID, in.GID)
	}
	return nil
}

func (p peerCreds) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := p.check(ctx); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (p peerCreds) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := p.check(ss.Context()); err != nil {
		return err
	}
	return h(srv, ss)
}
