//go:build !linux

package syslog

import (
	"net"
	"testing"
)

// unacked needs SIOCOUTQ; elsewhere the tests that use it are skipped.
func unacked(t *testing.T, _ net.Conn) int {
	t.Skip("SIOCOUTQ is Linux only")
	return 0
}
