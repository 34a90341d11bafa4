//go:build !linux

package syslog

import (
	"errors"
	"net"
)

var oobSize = 0

func countKernelDrops(*net.UDPConn) error { return errors.ErrUnsupported }

func kernelDrops([]byte) (uint32, bool) { return 0, false }

func readBuffer(*net.UDPConn) (int, error) { return 0, errors.ErrUnsupported }
