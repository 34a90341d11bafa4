package syslog

import (
	"encoding/binary"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// oobSize holds one SO_RXQ_OVFL control message.
var oobSize = unix.CmsgSpace(4)

// countKernelDrops asks the kernel to attach to every datagram how many
// datagrams it has dropped on the socket so far (SO_RXQ_OVFL).
func countKernelDrops(c *net.UDPConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1)
	}); err != nil {
		return err
	}
	return serr
}

// kernelDrops returns the drop count the kernel sent with a datagram, from
// its control messages. It walks them in place: one datagram, no
// allocation (unix.ParseSocketControlMessage allocates).
func kernelDrops(oob []byte) (uint32, bool) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if int(h.Len) < unix.SizeofCmsghdr || int(h.Len) > len(oob) {
			return 0, false
		}
		data := oob[unix.CmsgLen(0):h.Len]
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SO_RXQ_OVFL && len(data) >= 4 {
			return binary.NativeEndian.Uint32(data), true
		}
		oob = oob[min(len(oob), unix.CmsgSpace(int(h.Len)-unix.CmsgLen(0))):]
	}
	return 0, false
}

// readBuffer returns the receive buffer the socket has, as the kernel
// means it: Linux reports twice the usable size it was asked for (the
// rest is for its bookkeeping), so this halves what SO_RCVBUF says.
func readBuffer(c *net.UDPConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var serr error
	if err := raw.Control(func(fd uintptr) {
		n, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	}); err != nil {
		return 0, err
	}
	return n / 2, serr
}
