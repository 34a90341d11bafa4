//go:build !linux

package forwarder

import (
	"errors"
	"net"
	"time"
)

// unackedBytes needs SIOCOUTQ (Linux). Elsewhere a tcp or tls write counts
// as delivered once the kernel took it, as before.
func unackedBytes(*net.TCPConn) (int, error) {
	return 0, errors.New("unacknowledged bytes are only known on linux")
}

func setUserTimeout(*net.TCPConn, time.Duration) {}
