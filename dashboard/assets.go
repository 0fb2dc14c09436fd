package dashboard

import (
	"bytes"
	"embed"
	"net/http"
	"time"
)

// web holds the page and its assets: plain HTML, CSS and JavaScript, with
// no build step and nothing loaded from elsewhere, so the dashboard works
// offline.
//
//go:embed web
var web embed.FS

func serveIndex(w http.ResponseWriter, r *http.Request) {
	serveFile(w, r, "index.html")
}

// serveAsset serves the files the page links to under assets/.
func serveAsset(w http.ResponseWriter, r *http.Request) {
	switch name := r.PathValue("file"); name {
	case "app.js", "style.css", "favicon.svg":
		serveFile(w, r, name)
	default:
		http.NotFound(w, r)
	}
}

func serveFile(w http.ResponseWriter, r *http.Request, name string) {
	b, err := web.ReadFile("web/" + name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	// The files are small: browsers revalidate them on every load, so a
	// new version of the program never runs with an old script.
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
}
