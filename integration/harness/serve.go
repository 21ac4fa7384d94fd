package harness

import "net"

// ServeEach runs serve on its own goroutine for every connection l
// accepts, closing the connection after it, until l closes.
func ServeEach(l net.Listener, serve func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			serve(c)
		}()
	}
}
