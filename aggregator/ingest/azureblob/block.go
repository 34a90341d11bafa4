package azureblob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/outpost-siem/outpost/aggregator/event"
)

// Flow-log block layout. Network Watcher keeps one `{"records":[...]}`
// document per NIC and hour as a block blob and re-commits it about every
// minute: block 0 is the 12-byte head `{"records":[`, the last block the
// 2-byte tail `]}`, and each new record block is inserted just before the
// tail, starting with a comma from the second record block on. Delivered
// blocks therefore keep their index, id and bytes; only the blocks after
// the checkpoint and before the tail are new.
const (
	flowHead     = `{"records":[`
	maxFrameSize = 64 // largest head or tail block taken for the flow layout
	// maxDocument bounds a block blob read whole (without the flow layout).
	maxDocument = 256 << 20
)

// readBlocks reads a block blob's new committed blocks. Block ids go into
// the record keys, so a re-read (after a crash, or after the layout
// changed under the checkpoint) yields the same event ids.
//
// The block list and every range read are conditional on the ETag of the
// properties: if Azure re-commits in between, the read fails with 412 and
// readBlob starts over (errGrew); what was delivered before stays
// delivered, since each group of blocks is checkpointed on its own.
func (a *account) readBlocks(ctx context.Context, b blobRef, key []byte, cp checkpoint) error {
	bbc := a.svc.NewContainerClient(b.container).NewBlockBlobClient(b.name)
	props, err := bbc.GetProperties(ctx, nil)
	if err != nil {
		if !isNotFound(err) {
			a.m.errors.WithLabelValues(errRead).Inc()
		}
		return fmt.Errorf("getting properties: %w", err)
	}
	var created time.Time
	if props.CreationTime != nil {
		created = props.CreationTime.UTC()
	}
	if !cp.Created.Equal(created) {
		cp = checkpoint{Created: created}
	}
	etag := props.ETag
	var size int64
	if props.ContentLength != nil {
		size = *props.ContentLength
	}
	cond := &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: etag}}
	bl, err := bbc.GetBlockList(ctx, blockblob.BlockListTypeCommitted, &blockblob.GetBlockListOptions{AccessConditions: cond})
	if err != nil {
		if isConditionNotMet(err) {
			return errGrew
		}
		a.m.errors.WithLabelValues(errRead).Inc()
		return fmt.Errorf("getting the block list: %w", err)
	}
	blocks := bl.CommittedBlocks
	sender := a.cfg.Name + "/" + b.container + "/" + b.name
	if !flowLayout(blocks) {
		return a.readDocument(ctx, b, key, cp, bbc.BlobClient(), etag, size)
	}
	recs := blocks[1 : len(blocks)-1]
	// digests[i] is the digest of recs[:i].
	digests := blockDigests(recs)
	if cp.Blocks > len(recs) || (cp.Blocks > 0 && (blockName(recs[cp.Blocks-1]) != cp.LastBlock ||
		(cp.BlockDigest != "" && digests[cp.Blocks] != cp.BlockDigest))) {
		// Not how Network Watcher writes: a delivered block was replaced,
		// resized, moved or removed. Start over: the unchanged blocks'
		// events get the same ids as before, so downstream drops the
		// repeats, and a replaced block's records arrive under its new id.
		a.m.errors.WithLabelValues(errLayout).Inc()
		a.logProblem(errLayout, "flow-log blob's committed blocks changed under its checkpoint; reading it again", "blob", sender)
		cp = checkpoint{Created: created}
	}
	// start[i] is the offset of recs[i]; blocks[0] (the head) starts at 0.
	start := make([]int64, len(recs)+1)
	start[0] = blockSize(blocks[0])
	for i, bk := range recs {
		start[i+1] = start[i] + blockSize(bk)
	}
	pos := positionKey(a.cfg.Name, b, created)
	o := Origin{Container: b.container, Sender: sender}
	maxRec := int64(a.Source.cfg.MaxRecordSize)
	chunk := max(int64(minChunk), 2*maxRec)
	bc := bbc.BlobClient()
	checkHead := cp.Blocks == 0

	for i := cp.Blocks; i < len(recs); {
		if err := ctx.Err(); err != nil {
			return err
		}
		// A group of blocks read with one request, or one oversize block.
		j := i + 1
		oversize := blockSize(recs[i]) > maxRec
		for !oversize && j < len(recs) && start[j+1]-start[i] <= chunk && blockSize(recs[j]) <= maxRec {
			j++
		}
		from, count := start[i], start[j]-start[i]
		if oversize {
			count = maxRec
		}
		if checkHead {
			from, count = 0, count+start[i]
		}
		data, _, err := a.download(ctx, bc, from, count, etag, transportBlock)
		if err != nil {
			return err
		}
		if checkHead {
			if string(bytes.TrimSpace(data[:start[0]])) != flowHead {
				return a.readDocument(ctx, b, key, cp, bc, etag, size)
			}
			data = data[start[0]:]
			checkHead = false
		}
		o.Received = a.now().UTC()
		var (
			evs  []*event.Event
			dead []deadLetter
		)
		if oversize {
			dead = append(dead, deadLetter{errOversize, fmt.Sprintf("block %s is %d bytes, over max_record_size", blockName(recs[i]), blockSize(recs[i])), data})
		} else {
			for k := i; k < j; k++ {
				raw := data[start[k]-start[i] : start[k+1]-start[i]]
				prefix := pos + "#b:" + blockName(recs[k])
				records, err := blockRecords(raw)
				if err != nil {
					dead = append(dead, deadLetter{errJSON, fmt.Sprintf("block %s: %v", blockName(recs[k]), err), raw})
					continue
				}
				evs, dead = a.parseRecords(records, o, func(n int) string { return prefix + "/" + strconv.Itoa(n) }, evs, dead)
			}
		}
		if err := a.deliver(ctx, sender, transportBlock, evs, dead); err != nil {
			return err
		}
		cp.Blocks, cp.LastBlock, cp.BlockDigest, cp.Offset = j, blockName(recs[j-1]), digests[j], start[j]
		if err := a.saveCheckpoint(key, cp); err != nil {
			a.m.errors.WithLabelValues(errState).Inc()
			return err
		}
		i = j
	}
	cp.ETag = normETag(string(*etag))
	return a.saveCheckpoint(key, cp)
}

// flowLayout tells whether the committed blocks look like a flow log's:
// a small head, record blocks, a small tail.
func flowLayout(blocks []*blockblob.Block) bool {
	return len(blocks) >= 2 &&
		blockSize(blocks[0]) <= maxFrameSize && blockSize(blocks[0]) >= int64(len(flowHead)) &&
		blockSize(blocks[len(blocks)-1]) <= maxFrameSize
}

// blockDigests returns, for every i in 0..len(recs), a digest of the ids
// and sizes of recs[:i]: a hash chain, d[i+1] = sha256(d[i], id, size),
// so every prefix costs one step. Hex of 16 bytes.
func blockDigests(recs []*blockblob.Block) []string {
	out := make([]string, len(recs)+1)
	var d [sha256.Size]byte
	h := sha256.New()
	for i, bk := range recs {
		h.Reset()
		h.Write(d[:])
		id := blockName(bk)
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(id))))
		h.Write([]byte(id))
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(blockSize(bk))))
		h.Sum(d[:0])
		out[i+1] = hex.EncodeToString(d[:16])
	}
	return out
}

// blockRecords returns the records in one record block: a comma-separated
// run of JSON objects, with the leading comma of every block but the first.
func blockRecords(raw []byte) ([][]byte, error) {
	t := bytes.TrimSpace(raw)
	t = bytes.TrimSpace(bytes.TrimPrefix(t, []byte(",")))
	t = bytes.TrimSpace(bytes.TrimSuffix(t, []byte(",")))
	if len(t) == 0 {
		return nil, nil
	}
	var recs []json.RawMessage
	buf := make([]byte, 0, len(t)+2)
	buf = append(append(append(buf, '['), t...), ']')
	if err := json.Unmarshal(buf, &recs); err != nil {
		return nil, fmt.Errorf("not a JSON record run: %w", err)
	}
	out := make([][]byte, len(recs))
	for i, r := range recs {
		out[i] = r
	}
	return out, nil
}

// readDocument reads a block blob that lacks the flow-log layout (a
// pre-2018 `{"records":[...]}` blob, JSON Lines written as a block blob)
// whole, and delivers the records after the first cp.Records. It is
// re-read only when its ETag changes.
func (a *account) readDocument(ctx context.Context, b blobRef, key []byte, cp checkpoint, bc *blob.Client, etag *azcore.ETag, size int64) error {
	sender := a.cfg.Name + "/" + b.container + "/" + b.name
	var (
		evs  []*event.Event
		dead []deadLetter
		data []byte
	)
	if size > maxDocument {
		dead = append(dead, deadLetter{errOversize, fmt.Sprintf("block blob of %d bytes without the flow-log block layout is over %d bytes", size, maxDocument), nil})
	} else if size > 0 {
		var err error
		if data, _, err = a.download(ctx, bc, 0, size, etag, transportBlock); err != nil {
			return err
		}
	}
	var records [][]byte
	if t := bytes.TrimSpace(data); isRecordsDoc(t) {
		var doc struct {
			Records []json.RawMessage `json:"records"`
		}
		if err := json.Unmarshal(t, &doc); err != nil {
			dead = append(dead, deadLetter{errJSON, fmt.Sprintf("records document: %v", err), t})
		}
		for _, r := range doc.Records {
			records = append(records, r)
		}
	} else {
		for _, line := range bytes.Split(data, []byte("\n")) {
			if len(bytes.TrimSpace(line)) > 0 {
				records = append(records, splitRecords(line)...)
			}
		}
	}
	if cp.Records < len(records) {
		pos := positionKey(a.cfg.Name, b, cp.Created)
		first := cp.Records
		o := Origin{Container: b.container, Sender: sender, Received: a.now().UTC()}
		evs, dead = a.parseRecords(records[first:], o, func(i int) string { return pos + "#r:" + strconv.Itoa(first+i) }, evs, dead)
	}
	if err := a.deliver(ctx, sender, transportBlock, evs, dead); err != nil {
		return err
	}
	cp.Records = max(cp.Records, len(records))
	cp.Offset = size
	if etag != nil {
		cp.ETag = normETag(string(*etag))
	}
	return a.saveCheckpoint(key, cp)
}

func blockName(b *blockblob.Block) string {
	if b == nil || b.Name == nil {
		return ""
	}
	return *b.Name
}

func blockSize(b *blockblob.Block) int64 {
	if b == nil || b.Size == nil {
		return 0
	}
	return *b.Size
}
