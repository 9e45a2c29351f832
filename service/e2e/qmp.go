package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"time"
)

// QMP is a client of QEMU's machine protocol: commands with replies, and events delivered to
// whoever waits for them. QEMU serves one client per socket, so the harness owns it alone.
type QMP struct {
	conn net.Conn
	enc  *json.Encoder

	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan qmpReply
	waiters []*qmpWaiter
	closed  error
}

type qmpReply struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	ID    string          `json:"id"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

type qmpWaiter struct {
	event string
	match func(data json.RawMessage) bool
	ch    chan json.RawMessage
}

// DialQMP connects to QEMU's QMP socket and leaves capability negotiation done.
func DialQMP(path string, timeout time.Duration) (*QMP, error) {
	conn, err := dialRetry(path, timeout)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to QMP: %w", err)
	}
	q := &QMP{conn: conn, enc: json.NewEncoder(conn), pending: map[string]chan qmpReply{}}
	r := bufio.NewReader(conn)
	if _, err := r.ReadBytes('\n'); err != nil { // the greeting
		conn.Close()
		return nil, fmt.Errorf("cannot read the QMP greeting: %w", err)
	}
	go q.read(r)
	if _, err := q.Execute("qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

// dialRetry connects to a unix socket that QEMU creates shortly after it starts.
func dialRetry(path string, timeout time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.Dial("unix", path)
		if err == nil || time.Now().After(deadline) {
			return conn, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (q *QMP) read(r *bufio.Reader) {
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			q.mu.Lock()
			q.closed = fmt.Errorf("QMP connection closed: %w", err)
			for id, ch := range q.pending {
				close(ch)
				delete(q.pending, id)
			}
			q.mu.Unlock()
			return
		}
		var msg qmpReply
		if json.Unmarshal(line, &msg) != nil {
			continue
		}
		q.mu.Lock()
		if msg.Event != "" {
			kept := q.waiters[:0]
			for _, w := range q.waiters {
				if w.event == msg.Event && (w.match == nil || w.match(msg.Data)) {
					w.ch <- msg.Data
					continue
				}
				kept = append(kept, w)
			}
			q.waiters = kept
		} else if ch, ok := q.pending[msg.ID]; ok {
			ch <- msg
			delete(q.pending, msg.ID)
		}
		q.mu.Unlock()
	}
}

// Execute runs one command and returns its "return" value.
func (q *QMP) Execute(cmd string, args any) (json.RawMessage, error) {
	q.mu.Lock()
	if q.closed != nil {
		q.mu.Unlock()
		return nil, q.closed
	}
	q.nextID++
	id := fmt.Sprint(q.nextID)
	ch := make(chan qmpReply, 1)
	q.pending[id] = ch
	msg := map[string]any{"execute": cmd, "id": id}
	if args != nil {
		msg["arguments"] = args
	}
	err := q.enc.Encode(msg)
	q.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("cannot send %s: %w", cmd, err)
	}
	select {
	case reply, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("%s: QMP connection closed", cmd)
		}
		if reply.Error != nil {
			return nil, fmt.Errorf("%s: %s: %s", cmd, reply.Error.Class, reply.Error.Desc)
		}
		return reply.Return, nil
	case <-time.After(time.Minute):
		return nil, fmt.Errorf("%s: no reply from QEMU within a minute", cmd)
	}
}

// Expect registers interest in the next event named event that satisfies match (nil: any).
// Register before the command that causes the event, then wait on the channel.
func (q *QMP) Expect(event string, match func(json.RawMessage) bool) <-chan json.RawMessage {
	w := &qmpWaiter{event: event, match: match, ch: make(chan json.RawMessage, 1)}
	q.mu.Lock()
	q.waiters = append(q.waiters, w)
	q.mu.Unlock()
	return w.ch
}

// Close closes the connection.
func (q *QMP) Close() error { return q.conn.Close() }
