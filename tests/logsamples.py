"""Log lines captured from the real docker-registry 2.8.2 (Debian) with htpasswd auth, through its text
and JSON formatters: a good pull, a wrong password (and its access line), an anonymous request.

Several test modules feed these to the parsers, to serve, and to the followers.
"""

# fmt: off
TEXT_GOOD = ('time="2026-11-23T02:50:01.414621958Z" level=info msg="authorized request" go.version=go1.19.8 '
             'http.request.host="127.0.0.1:44603" http.request.id=4720cdf6-3261-4d54-a42c-33d8be4c50d9 '
             'http.request.method=GET http.request.remoteaddr="127.0.0.1:50924" '
             'http.request.uri=/v2/lib/nope/manifests/v1 http.request.useragent=python-requests/2.34.2 '
             'vars.name=lib/nope vars.reference=v1')
TEXT_BAD = [
    ('time="2026-11-23T02:50:00.195986197Z" level=error msg="error authenticating user \\"alice\\": authentication '
     'failure" go.version=go1.19.8 http.request.host="127.0.0.1:44603" '
     'http.request.id=94c9a6c9-f22d-40c1-a947-a2c85dfbff3a http.request.method=GET '
     'http.request.remoteaddr="127.0.0.1:41910" http.request.uri=/v2/lib/app/manifests/v1 '
     'http.request.useragent=python-requests/2.34.2 vars.name=lib/app vars.reference=v1'),
    ('time="2026-11-23T02:50:00.196076066Z" level=warning msg="error authorizing context: basic authentication '
     'challenge for realm \\"regwatch\\": authentication failure" go.version=go1.19.8 '
     'http.request.host="127.0.0.1:44603" http.request.id=94c9a6c9-f22d-40c1-a947-a2c85dfbff3a http.request.method=GET '
     'http.request.remoteaddr="127.0.0.1:41910" http.request.uri=/v2/lib/app/manifests/v1 '
     'http.request.useragent=python-requests/2.34.2 vars.name=lib/app vars.reference=v1'),
    ('127.0.0.1 - - [23/Nov/2026:02:50:00 +0000] "GET /v2/lib/app/manifests/v1 HTTP/1.1" 401 150 "" '
     '"python-requests/2.34.2"'),
    ]
TEXT_ANON = [
    ('time="2026-11-23T02:50:00.804080277Z" level=warning msg="error authorizing context: basic authentication '
     'challenge for realm \\"regwatch\\": invalid authorization credential" go.version=go1.19.8 '
     'http.request.host="127.0.0.1:44603" http.request.id=b981bcfe-b864-4edc-9023-79a0cde998d3 http.request.method=GET '
     'http.request.remoteaddr="127.0.0.1:41914" http.request.uri=/v2/lib/app/manifests/v1 '
     'http.request.useragent=python-requests/2.34.2 vars.name=lib/app vars.reference=v1'),
    ('127.0.0.1 - - [23/Nov/2026:02:50:00 +0000] "GET /v2/lib/app/manifests/v1 HTTP/1.1" 401 150 "" '
     '"python-requests/2.34.2"'),
    ]
JSON_LINES = [
    ('{"go.version":"go1.19.8","http.request.host":"127.0.0.1:45611",'
     '"http.request.id":"903a3273-c46b-49d6-8666-9dec70baf545","http.request.method":"GET",'
     '"http.request.remoteaddr":"127.0.0.1:37242","http.request.uri":"/v2/lib/app/manifests/v1",'
     '"http.request.useragent":"python-requests/2.34.2","level":"info","msg":"authorized request",'
     '"time":"2026-11-23T02:51:54.639366211Z","vars.name":"lib/app","vars.reference":"v1"}'),
    ('{"auth.user.name":"alice","err.code":"manifest unknown","err.message":"OCI manifest found, '
     'but accept header does not support OCI manifests","go.version":"go1.19.8","http.request.host":"127.0.0.1:45611",'
     '"http.request.id":"903a3273-c46b-49d6-8666-9dec70baf545","http.request.method":"GET",'
     '"http.request.remoteaddr":"127.0.0.1:37242","http.request.uri":"/v2/lib/app/manifests/v1",'
     '"http.request.useragent":"python-requests/2.34.2","http.response.contenttype":"application/json; charset=utf-8",'
     '"http.response.duration":"2.069895ms","http.response.status":404,"http.response.written":122,"level":"error",'
     '"msg":"response completed with error","time":"2026-11-23T02:51:54.639812155Z","vars.name":"lib/app",'
     '"vars.reference":"v1"}'),
    ('127.0.0.1 - - [23/Nov/2026:02:51:54 +0000] "GET /v2/lib/app/manifests/v1 HTTP/1.1" 404 122 "" '
     '"python-requests/2.34.2"'),
    ('{"go.version":"go1.19.8","http.request.host":"127.0.0.1:45611",'
     '"http.request.id":"c1c284cd-469a-4e8a-9e54-dd5a09b2b992","http.request.method":"GET",'
     '"http.request.remoteaddr":"127.0.0.1:37258","http.request.uri":"/v2/lib/app/manifests/v1",'
     '"http.request.useragent":"python-requests/2.34.2","level":"error",'
     '"msg":"error authenticating user \\"alice\\": authentication failure","time":"2026-11-23T02:51:54.943670938Z",'
     '"vars.name":"lib/app","vars.reference":"v1"}'),
    ('{"go.version":"go1.19.8","http.request.host":"127.0.0.1:45611",'
     '"http.request.id":"c1c284cd-469a-4e8a-9e54-dd5a09b2b992","http.request.method":"GET",'
     '"http.request.remoteaddr":"127.0.0.1:37258","http.request.uri":"/v2/lib/app/manifests/v1",'
     '"http.request.useragent":"python-requests/2.34.2","level":"warning",'
     '"msg":"error authorizing context: basic authentication challenge for realm \\"regwatch\\": authentication '
     'failure","time":"2026-11-23T02:51:54.943737221Z","vars.name":"lib/app","vars.reference":"v1"}'),
    ('127.0.0.1 - - [23/Nov/2026:02:51:54 +0000] "GET /v2/lib/app/manifests/v1 HTTP/1.1" 401 150 "" '
     '"python-requests/2.34.2"'),
    ]
# fmt: on
