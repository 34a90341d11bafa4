package azureblob

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// errGrew reports a 412 on a conditional read: the blob changed between
// the request that sized the read and the read. The caller reads again.
var errGrew = errors.New("blob changed during the read (412)")

// maxRetriesGrew bounds how often one poll re-reads a blob that keeps
// changing under it; after that it waits for the next poll.
const maxRetriesGrew = 3

// readBlob reads what is new in one listed blob, if anything.
func (a *account) readBlob(ctx context.Context, b blobRef) error {
	key := blobKey(a.cfg.Name, b.container, b.name)
	cp, err := a.loadCheckpoint(key)
	if err != nil {
		a.m.errors.WithLabelValues(errState).Inc()
		return err
	}
	// The listing is enough to skip a blob that has not changed: no
	// request per idle blob.
	sameBlob := b.created.IsZero() || cp.Created.Equal(b.created)
	switch b.kind {
	case blob.BlobTypeAppendBlob:
		if sameBlob && cp.Offset == b.size {
			return nil
		}
	case blob.BlobTypeBlockBlob:
		if sameBlob && cp.ETag != "" && cp.ETag == b.etag {
			return nil
		}
	default:
		return nil // page blobs hold no logs
	}
	a.m.blobs.Inc()
	for attempt := 0; ; attempt++ {
		if b.kind == blob.BlobTypeAppendBlob {
			err = a.readAppend(ctx, b, key, cp)
		} else {
			err = a.readBlocks(ctx, b, key, cp)
		}
		if !errors.Is(err, errGrew) || attempt+1 >= maxRetriesGrew {
			break
		}
		if cp, err = a.loadCheckpoint(key); err != nil {
			break
		}
	}
	if errors.Is(err, errGrew) {
		return nil // it keeps changing; the next poll reads it
	}
	if isNotFound(err) {
		return nil // deleted by retention between listing and reading
	}
	return err
}

// download reads count bytes at offset with one ranged GET. A non-empty
// etag makes the read conditional (If-Match), and a 412 comes back as
// errGrew.
func (a *account) download(ctx context.Context, bc *blob.Client, offset, count int64, etag *azcore.ETag, transport string) ([]byte, time.Time, error) {
	opts := &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: offset, Count: count}}
	if etag != nil {
		opts.AccessConditions = &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: etag}}
	}
	resp, err := bc.DownloadStream(ctx, opts)
	if err != nil {
		if isConditionNotMet(err) {
			return nil, time.Time{}, errGrew
		}
		a.m.errors.WithLabelValues(errRead).Inc()
		return nil, time.Time{}, fmt.Errorf("downloading bytes %d-%d: %w", offset, offset+count-1, err)
	}
	defer resp.Body.Close()
	buf, err := io.ReadAll(io.LimitReader(resp.Body, count))
	if err != nil {
		a.m.errors.WithLabelValues(errRead).Inc()
		return nil, time.Time{}, fmt.Errorf("reading bytes %d-%d: %w", offset, offset+count-1, err)
	}
	if int64(len(buf)) != count {
		a.m.errors.WithLabelValues(errRead).Inc()
		return nil, time.Time{}, fmt.Errorf("short read at %d: got %d bytes, want %d", offset, len(buf), count)
	}
	a.m.bytes.WithLabelValues(transport).Add(float64(len(buf)))
	var created time.Time
	if resp.CreationTime != nil {
		created = resp.CreationTime.UTC()
	}
	return buf, created, nil
}

// deadLetterSample bounds the bytes of a bad record kept in DEADLETTER.
const deadLetterSample = 64 << 10

// deadLetter is a record the source could not turn into events.
type deadLetter struct {
	kind   string // error_type
	reason string
	data   []byte
}

// deliver dead-letters the bad records, then publishes the events and
// waits for JetStream's acks. Only when it returns nil may the caller
// advance the checkpoint past these records.
func (a *account) deliver(ctx context.Context, sender, transport string, evs []*event.Event, dead []deadLetter) error {
	for _, d := range dead {
		a.m.errors.WithLabelValues(d.kind).Inc()
		a.logProblem(d.kind, "bad azure record dead-lettered", "blob", sender, "reason", d.reason,
			"sample", string(d.data[:min(len(d.data), 200)]))
		// A sample: NATS caps a message at 1MiB by default, and the reason
		// says where in the blob the whole record is.
		sample := d.data[:min(len(d.data), deadLetterSample)]
		if err := a.sink.DeadLetter(ctx, SourceName, d.kind+": "+d.reason, sample, sender); err != nil {
			a.m.errors.WithLabelValues(errPublish).Inc()
			return fmt.Errorf("dead-lettering a record: %w", err)
		}
	}
	for len(evs) > 0 {
		n := min(len(evs), publishBatch)
		if err := a.sink.PublishEvents(ctx, evs[:n]); err != nil {
			a.m.errors.WithLabelValues(errPublish).Inc()
			return fmt.Errorf("publishing events: %w", err)
		}
		a.m.events.WithLabelValues(transport).Add(float64(n))
		evs = evs[n:]
	}
	return nil
}

// parseRecords parses one unit of input (a JSON line, or a flow-log
// block's records) into events, collecting the bad records as dead
// letters. recs are JSON objects; keyOf gives the stable position key of
// the i-th.
func (a *account) parseRecords(recs [][]byte, o Origin, keyOf func(i int) string, evs []*event.Event, dead []deadLetter) ([]*event.Event, []deadLetter) {
	for i, rec := range recs {
		if len(rec) > int(a.Source.cfg.MaxRecordSize) {
			dead = append(dead, deadLetter{errOversize, fmt.Sprintf("record of %d bytes exceeds max_record_size", len(rec)), rec[:a.Source.cfg.MaxRecordSize]})
			continue
		}
		o.Key = keyOf(i)
		got, err := Parse(rec, o)
		if err == nil {
			a.Source.records.Load().Fill(rec, got)
		}
		if err != nil {
			kind := errJSON
			if errors.Is(err, ErrSchema) {
				kind = errSchema
			}
			dead = append(dead, deadLetter{kind, err.Error(), rec})
			continue
		}
		evs = append(evs, got...)
	}
	return evs, dead
}

// splitRecords returns the records of one JSON line: the line itself, or,
// for the pre-2018 `{"records":[...]}` shape, the array's elements. A line
// that is not JSON is returned as is, for Parse to reject.
func splitRecords(line []byte) [][]byte {
	t := bytes.TrimSpace(line)
	if !isRecordsDoc(t) {
		return [][]byte{t}
	}
	var doc struct {
		Records []json.RawMessage `json:"records"`
	}
	if err := json.Unmarshal(t, &doc); err != nil || doc.Records == nil {
		return [][]byte{t}
	}
	out := make([][]byte, len(doc.Records))
	for i, r := range doc.Records {
		out[i] = r
	}
	return out
}

// isRecordsDoc tells a `{"records":[` document from a record.
func isRecordsDoc(b []byte) bool {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return false
	}
	b = bytes.TrimSpace(b[1:])
	if !bytes.HasPrefix(b, []byte(`"records"`)) {
		return false
	}
	b = bytes.TrimSpace(b[len(`"records"`):])
	if len(b) == 0 || b[0] != ':' {
		return false
	}
	b = bytes.TrimSpace(b[1:])
	return len(b) > 0 && b[0] == '['
}

func isNotFound(err error) bool {
	var re *azcore.ResponseError
	return bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) ||
		(errors.As(err, &re) && re.StatusCode == http.StatusNotFound)
}

// isThrottled tells a 429 or 503 that outlasted the SDK's retries: the
// account is over its scalability targets.
func isThrottled(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && (re.StatusCode == http.StatusTooManyRequests || re.StatusCode == http.StatusServiceUnavailable)
}

func isConditionNotMet(err error) bool {
	var re *azcore.ResponseError
	return bloberror.HasCode(err, bloberror.ConditionNotMet) ||
		(errors.As(err, &re) && re.StatusCode == http.StatusPreconditionFailed)
}

// positionKey is the stable part of every record key of one blob: a re-read
// of the same blob (same creation time) gives the same keys.
func positionKey(account string, b blobRef, created time.Time) string {
	return account + "/" + b.container + "/" + b.name + "@" + created.UTC().Format(time.RFC3339Nano)
}
