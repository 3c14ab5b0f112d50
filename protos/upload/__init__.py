"""The upload API's .proto files in buf's layout (``upload/v1/*.proto``) and the code
``make`` generates from them next to each file."""
