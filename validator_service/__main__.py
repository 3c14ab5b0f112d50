from validator_service.server import serve

serve()
