package forwarder

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// unackedBytes is how many bytes written on c the peer's TCP has not
// acknowledged yet (SIOCOUTQ: unsent plus sent and unacknowledged).
func unackedBytes(c *net.TCPConn) (int, error) {
	sc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var ierr error
	if err := sc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil {
		return 0, err
	}
	return n, ierr
}

// setUserTimeout sets TCP_USER_TIMEOUT: the kernel gives up on the
// connection (the next write or read fails) when written data stays
// unacknowledged for d, instead of retransmitting for many minutes.
func setUserTimeout(c *net.TCPConn, d time.Duration) {
	sc, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = sc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
	})
}
