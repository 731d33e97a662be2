"""The `learn` application: command-line commands above the libraries (learn_tf, beam, serving, tfx_pipeline).

Each command parses its flags, resolves paths with `learn_tf.layout.RunLayout`
and calls one library function; nothing under the libraries imports this
package.
"""
