# Writes OUTPUT: a C++ file defining `extern const char NAME[]` (in namespace NAMESPACE) with the
# bytes of INPUT, so a static file ships inside the binary with no build step of its own.
file(READ ${INPUT} CONTENT)
string(FIND "${CONTENT}" ")zeroskip_embed\"" CLASH)
if(NOT CLASH EQUAL -1)
  message(FATAL_ERROR "${INPUT} contains the raw-string delimiter")
endif()
file(WRITE ${OUTPUT} "// Generated from ${INPUT} by cmake/embed.cmake: do not edit.\n"
     "namespace ${NAMESPACE} {\nextern const char ${NAME}[] = R\"zeroskip_embed(${CONTENT})zeroskip_embed\";\n}\n")
