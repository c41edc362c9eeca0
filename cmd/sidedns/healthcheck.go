package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// healthcheckTimeout stays well under Docker's default 30 s healthcheck timeout.
const healthcheckTimeout = 3 * time.Second

// healthcheck is `sidedns healthcheck [URL]`: a GET that exits 0 on 200 and
// 1 otherwise. The image is FROM scratch, so a healthcheck has no curl.
func healthcheck(args []string, getenv func(string) string, stderr io.Writer) int {
	if len(args) > 1 {
		fmt.Fprintln(stderr, "sidedns healthcheck: want at most one URL")
		return 2
	}
	url := ""
	if len(args) == 1 {
		url = args[0]
	} else {
		addr := getenv(envName("http"))
		if addr == "" {
			addr = defaultHTTP
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			fmt.Fprintf(stderr, "sidedns healthcheck: --http address %q: %v\n", addr, err)
			return 2
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			host = "127.0.0.1"
		}
		url = "http://" + net.JoinHostPort(host, port) + "/readyz"
	}
	c := &http.Client{Timeout: healthcheckTimeout}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintf(stderr, "sidedns healthcheck: %v\n", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "sidedns healthcheck: %s: %s\n", url, resp.Status)
		return 1
	}
	return 0
}
