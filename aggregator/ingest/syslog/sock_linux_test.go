package syslog

import (
	"encoding/binary"
	"net"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// unacked returns how many bytes c has sent that the peer's kernel has not
// acknowledged yet (SIOCOUTQ).
func unacked(t *testing.T, c net.Conn) int {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	if err := raw.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	return n
}

func TestKernelDropsParse(t *testing.T) {
	oob := make([]byte, unix.CmsgSpace(4)+unix.CmsgSpace(8))
	put := func(b []byte, typ int32, data []byte) {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = unix.SOL_SOCKET, typ
		h.SetLen(unix.CmsgLen(len(data)))
		copy(b[unix.CmsgLen(0):], data)
	}
	put(oob, unix.SO_TIMESTAMP, make([]byte, 8)) // another message first
	put(oob[unix.CmsgSpace(8):], unix.SO_RXQ_OVFL, binary.NativeEndian.AppendUint32(nil, 7))
	if n, ok := kernelDrops(oob); !ok || n != 7 {
		t.Errorf("kernelDrops = %d, %v; want 7", n, ok)
	}
	for _, b := range [][]byte{nil, oob[:3], oob[:unix.CmsgSpace(8)]} {
		if _, ok := kernelDrops(b); ok {
			t.Errorf("kernelDrops(%d bytes) found a count", len(b))
		}
	}
	if n := testing.AllocsPerRun(10, func() { kernelDrops(oob) }); n != 0 {
		t.Errorf("kernelDrops allocates %v times", n)
	}
}
