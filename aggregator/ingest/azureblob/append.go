package azureblob

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// minChunk is the smallest ranged read; a chunk is at least twice
// max_record_size so that a chunk without a LF proves an oversize line.
const minChunk = 4 << 20

// readAppend reads an append blob (JSON Lines: resource logs, the Activity
// Log, Entra ID logs) from the checkpoint to the last complete line.
//
// The length comes from a fresh GetProperties, and the read is one ranged
// DownloadStream of [offset, length) per chunk, without an ETag condition:
// an append blob only grows, so those bytes never change, and pinning the
// ETag (as DownloadBuffer does) would fail with 412 whenever Azure appends
// during the read. A blob deleted and created again under the same name is
// caught by its creation time, on the properties and on every response. A
// partial last line (an append in flight) stays unread until a later poll
// finds its LF.
func (a *account) readAppend(ctx context.Context, b blobRef, key []byte, cp checkpoint) error {
	bc := a.svc.NewContainerClient(b.container).NewBlobClient(b.name)
	props, err := bc.GetProperties(ctx, nil)
	if err != nil {
		if !isNotFound(err) {
			a.m.errors.WithLabelValues(errRead).Inc()
		}
		return fmt.Errorf("getting properties: %w", err)
	}
	var size int64
	if props.ContentLength != nil {
		size = *props.ContentLength
	}
	var created time.Time
	if props.CreationTime != nil {
		created = props.CreationTime.UTC()
	}
	if !cp.Created.Equal(created) || size < cp.Offset {
		// A new blob under an old name (or one that shrank, which an
		// append blob cannot do unless replaced): start over.
		cp = checkpoint{Created: created}
	}
	sender := a.cfg.Name + "/" + b.container + "/" + b.name
	pos := positionKey(a.cfg.Name, b, created)
	o := Origin{Container: b.container, Sender: sender}
	maxRec := int64(a.Source.cfg.MaxRecordSize)
	chunk := max(int64(minChunk), 2*maxRec)

	for cp.Offset < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(size-cp.Offset, chunk)
		data, got, err := a.download(ctx, bc, cp.Offset, n, nil, transportAppend)
		if err != nil {
			return err
		}
		if !got.IsZero() && !got.Equal(created) {
			return errGrew // replaced between GetProperties and the read: start again
		}
		end := bytes.LastIndexByte(data, '\n') + 1
		if end == 0 {
			if int64(len(data)) <= maxRec {
				return nil // a partial line: wait for its LF
			}
			// A line longer than max_record_size: find its end, dead-letter
			// its head, go on after it.
			skip, err := a.skipLine(ctx, bc, cp.Offset+int64(len(data)), size)
			if err != nil || skip < 0 {
				return err // no LF yet: wait
			}
			dl := []deadLetter{{errOversize, fmt.Sprintf("line at offset %d is %d bytes, over max_record_size", cp.Offset, skip-cp.Offset), data[:maxRec]}}
			if err := a.deliver(ctx, sender, transportAppend, nil, dl); err != nil {
				return err
			}
			cp.Offset = skip
			if err := a.saveCheckpoint(key, cp); err != nil {
				return err
			}
			continue
		}
		o.Received = a.now().UTC()
		var (
			evs  []*event.Event
			dead []deadLetter
		)
		for off := 0; off < end; {
			nl := bytes.IndexByte(data[off:end], '\n')
			line := data[off : off+nl]
			lineOff := cp.Offset + int64(off)
			off += nl + 1
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			if int64(len(line)) > maxRec {
				dead = append(dead, deadLetter{errOversize, fmt.Sprintf("line at offset %d is %d bytes, over max_record_size", lineOff, len(line)), line[:maxRec]})
				continue
			}
			prefix := pos + "#" + strconv.FormatInt(lineOff, 10)
			evs, dead = a.parseRecords(splitRecords(line), o, func(i int) string {
				return prefix + "/" + strconv.Itoa(i)
			}, evs, dead)
		}
		// Checkpoint only after the sink acked every event and dead
		// letter of these lines.
		if err := a.deliver(ctx, sender, transportAppend, evs, dead); err != nil {
			return err
		}
		cp.Offset += int64(end)
		if err := a.saveCheckpoint(key, cp); err != nil {
			a.m.errors.WithLabelValues(errState).Inc()
			return err
		}
	}
	return nil
}

// skipLine looks for the LF that ends an oversize line, reading from off up
// to size, and returns the offset just after it, or -1 when the line does
// not end yet.
func (a *account) skipLine(ctx context.Context, bc *blob.Client, off, size int64) (int64, error) {
	for off < size {
		n := min(size-off, int64(minChunk))
		data, _, err := a.download(ctx, bc, off, n, nil, transportAppend)
		if err != nil {
			return 0, err
		}
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			return off + int64(i) + 1, nil
		}
		off += n
	}
	return -1, nil
}
